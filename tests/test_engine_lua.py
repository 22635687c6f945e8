"""cu.engine on the project's Lua 5.3 AO test processes (built from source by tests/modules): every module
recipe, several messages with memory carried, errors with rollback, limits, snapshot/restore."""

from __future__ import annotations

import json

import pytest

from cu.engine import Instance, Module, Snapshot
from tests.modules.build import MODULES, build

pytestmark = pytest.mark.slow  # first run builds the modules (wasm64 system libraries: ~90 s)

ENV = {"Process": {"Id": "PROCESS-ID", "Owner": "OWNER", "Tags": [{"name": "Name", "value": "t"}]},
       "Module": {"Id": "MODULE-ID", "Owner": "OWNER", "Tags": []}}


def msg(action: str, data: str = "", **extra) -> dict:
    m = {"Id": "MSG-ID", "Owner": "OWNER", "From": "OWNER", "Target": "PROCESS-ID",
         "Tags": [{"name": "Action", "value": action}], "Data": data,
         "Timestamp": 1730000000000, "Block-Height": 1543210}
    m.update(extra)
    return m


# every recipe under its own Module-Format, plus the format-4 module under the wasm32 -metering format
# (load-time metering rewrite, docs/ABI.md (Limits and gas))
CASES = [(name, MODULES[name].module_format) for name in sorted(MODULES)]
CASES.append(("lua32-lazy", "wasm32-unknown-emscripten-metering"))


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}:{f.rsplit('-', 1)[-1]}" for n, f in CASES])
def lua_module(request, cache_dir):
    name, fmt = request.param
    wasm = build(name).read_bytes()
    return MODULES[name], Module.load(wasm, fmt, cache_dir=cache_dir / "engine")


def limits(mod: Module) -> dict:
    metered = mod.format.endswith("-metering")
    return {"memory_limit": 32 << 20, "compute_limit": 10**11 if metered else 2 * 10**9}


def ok(r: dict):
    assert "Error" not in r, r
    return r["Output"]


def test_messages_carry_memory_and_errors_roll_back(lua_module):
    info, mod = lua_module
    inst = Instance(mod, memory_limit=32 << 20)
    assert ok(inst.handle(msg("Count"), ENV)) == "1"
    assert ok(inst.handle(msg("Count"), ENV)) == "2"
    assert ok(inst.handle(msg("Eval", "1+1"), ENV))["data"] == "2"
    assert ok(inst.handle(msg("Echo", "hé"), ENV)) == "hé"
    t = ok(inst.handle(msg("Time"), ENV))
    assert t["date"] == "2024-10-27T03:33:20" and t["mktime"] == 1704067200 and t["time"] == 1730000000000
    assert t["weekday"] == "Sunday October 301"
    ex = ok(inst.handle(msg("Exec", "echo beep > /tmp/pwned"), ENV))
    assert ex["ok"] is False and ex["error"] == "Function not implemented"
    path = inst.handle(msg("Getenv", "PATH"), ENV)["Output"]
    assert path == ("/" if mod.format.endswith(("emscripten", "emscripten2", "emscripten3")) else None)

    r = inst.handle(msg("Fail", "x"), ENV)
    assert "Fail requested: x" in r["Error"]
    assert ok(inst.handle(msg("Count"), ENV)) == "3"

    looper = Instance(mod, **limits(mod))
    assert ok(looper.handle(msg("Count"), ENV)) == "1"
    r = looper.handle(msg("Loop"), ENV)
    assert r["Error"] == "out of gas!"
    assert ok(looper.handle(msg("Count"), ENV)) == "2"
    assert ok(inst.handle(msg("Count"), ENV)) == "4"

    r = inst.handle(msg("Grow", "40"), ENV)
    assert "not enough memory" in r["Error"] and "memory limit" in r["Error"]
    assert ok(inst.handle(msg("Count"), ENV)) == "5"
    assert ok(inst.handle(msg("Info"), ENV))["held_mib"] == 0

    bad = inst.handle('{"Tags": [', ENV)  # bad JSON message: the module reports it, the host survives
    assert "Error" in bad
    assert ok(inst.handle(msg("Count"), ENV)) == "6"


def test_outbox_and_randomness(lua_module):
    _, mod = lua_module
    inst = Instance(mod, **limits(mod))
    r = inst.handle(msg("Send", "payload", **{"Tags": [{"name": "Action", "value": "Send"},
                                                       {"name": "Send-To", "value": "OTHER"}]}), ENV)
    assert len(r["Messages"]) == 1 and r["Messages"][0]["Target"] == "OTHER"
    assert len(r["Spawns"]) == 1 and len(r["Assignments"]) == 1
    a = ok(Instance(mod).handle(msg("Random"), ENV))
    b = ok(Instance(mod).handle(msg("Random"), ENV))
    assert a == b and len(a["values"]) == 3


def test_snapshot_restore_continues_bit_identically(lua_module, tmp_path):
    _, mod = lua_module
    a = Instance(mod, **limits(mod))
    for _ in range(3):
        a.handle(msg("Count"), ENV)
    a.handle(msg("Eval", "Stash = string.rep('z', 100000)"), ENV)
    f = tmp_path / "snap.msgpack"
    f.write_bytes(a.snapshot().to_bytes())
    b = Instance.restore(mod, Snapshot.from_bytes(f.read_bytes()), **limits(mod))
    assert a.memory() == b.memory()
    for m in [msg("Count"), msg("Eval", "#Stash"), msg("Info"), msg("Random")]:
        ra, rb = a.handle(m, ENV), b.handle(m, ENV)
        assert ra == rb
    assert ok(b.handle(msg("Count"), ENV)) == ok(a.handle(msg("Count"), ENV)) == "5"
    assert a.memory() == b.memory()


def test_gas_reporting(lua_module):
    _, mod = lua_module
    inst = Instance(mod, **limits(mod))
    inst.handle(msg("Count"), ENV)
    small = inst.handle(msg("Eval", "1"), ENV)["GasUsed"]
    big = inst.handle(msg("Eval", "local s = 0 for i = 1, 100000 do s = s + i end return s"), ENV)
    assert big["Output"]["data"] == "5000050000"
    if mod.format.endswith("-metering"):
        assert big["GasUsed"] > small > 0
    else:
        assert big["GasUsed"] == small == 0  # docs/ABI.md (Limits and gas): non-metering formats report 0
        assert inst.last_fuel_used > 0


def test_handle_raw_returns_module_bytes(lua_module):
    _, mod = lua_module
    inst = Instance(mod)
    resp, err, gas = inst.handle_raw(json.dumps(msg("Count")).encode(), json.dumps(ENV).encode())
    assert err is None and json.loads(resp)["Output"] == 1  # raw module JSON (handle() makes it "1")
    resp, err, gas = inst.handle_raw(json.dumps(msg("Fail", "y")).encode(), json.dumps(ENV).encode())
    assert "Fail requested: y" in err
