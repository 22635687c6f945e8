"""The fuel-free engine (docs/ABI.md, Limits and gas): which engine an instance runs on, that both engines give
the same results and memory, that a reachable Compute-Limit still runs out of gas and that a runaway loop on
the fuel-free engine is still stopped by the wall-clock timeout with the same error."""

from __future__ import annotations

import pytest

import cu.engine.module as engine_module
from cu.engine import Instance, Module, ModuleError
from cu.engine.module import clear_process_cache
from cu.engine.native import native
from tests.modules.build import MODULES
from tests.modules.build import build as build_lua
from tests.wat.gen import FORMAT_OF, build

AOS_LIMITS = {"compute_limit": 9_000_000_000_000, "timeout_s": 30.0}  # the node's defaults


def load(fam: str, metered: bool = False) -> Module:
    return Module.load(build(fam, metered), FORMAT_OF[fam])


@pytest.fixture
def fuel_everywhere(monkeypatch):
    monkeypatch.setattr(engine_module, "FUEL_FREE", False)


def test_engine_choice():
    m = load("f4")
    threshold = int(30 * engine_module.FUEL_FREE_RATE)
    cases = [
        ({}, True),  # no timeout: only fuel bounds the call's work
        ({"compute_limit": 1000, "timeout_s": 30.0}, True),  # an explicit small Compute-Limit
        ({"compute_limit": threshold - 1, "timeout_s": 30.0}, True),
        ({"compute_limit": threshold, "timeout_s": 30.0}, False),
        (AOS_LIMITS, False),
        ({"timeout_s": 5.0}, False),  # the default Compute-Limit, 9e15
        ({"compute_limit": 10**12, "timeout_s": 5.0}, False),
    ]
    for limits, fuel in cases:
        assert Instance(m, **limits).fuel_engine is fuel, limits
    mm = load("f2", metered=True)  # metered formats count gas in usegas, never with fuel
    for limits in ({}, {"compute_limit": 4000}, AOS_LIMITS):
        assert Instance(mm, **limits).fuel_engine is False, limits


def test_switch_keeps_fuel_everywhere(fuel_everywhere):
    assert Instance(load("f4"), **AOS_LIMITS).fuel_engine is True
    assert Instance(load("f2", metered=True)).fuel_engine is True


def test_variants_are_distinct_code():
    for fam, limit in (("f4", None), ("w64", 32 << 20)):  # w64 under a 32 MiB limit: memory64-lowered code
        m = load(fam)
        free, fueled = m.compiled_for(limit, fuel=False), m.compiled_for(limit, fuel=True)
        assert free is not fueled and fueled.fuel and not free.fuel
        assert m.compiled_for(limit, fuel=False) is free  # compiled once per (lowering, engine)


def test_load_compiles_only_the_variant_run(tmp_path):
    """Module.load validates without compiling; the first instance compiles the one variant it runs, and a
    later load (this process or a new one, through the disk cache) describes the module from that code."""
    clear_process_cache()
    cache = tmp_path / "cwasm"
    wasm, fmt = build("w64"), FORMAT_OF["w64"]
    m = Module.load(wasm, fmt, cache_dir=cache)
    assert not m._compiled.compiled and m._variants == {} and not cache.exists()  # nothing compiled yet
    inst = Instance(m, memory_limit=32 << 20, **AOS_LIMITS)  # the node's defaults: lowered, fuel-free
    assert not inst.fuel_engine and list(m._variants) == [(True, False)]
    assert len(list(cache.glob("*.cwasm"))) == 1
    clear_process_cache()  # a new process: the disk cache has the code, so nothing is validated or compiled
    m2 = Module.load(wasm, fmt, cache_dir=cache)
    assert m2._compiled.compiled and list(m2._variants) == [(True, False)]
    assert m2.imports() == m.imports() and m2.exports() == m.exports()  # the description equals the code's
    assert Instance(m2, memory_limit=32 << 20, **AOS_LIMITS).handle("c", "{}") == inst.handle("c", "{}")
    assert len(list(cache.glob("*.cwasm"))) == 1
    with pytest.raises(ModuleError, match="invalid wasm module"):
        Module.load(wasm[:-3], fmt)  # still refused at load, not at the first instance
    with pytest.raises(ModuleError, match="missing export 'handle'"):
        Module.load(wasm.replace(b"\x06handle", b"\x06handlf"), fmt)
    with pytest.raises(ValueError, match="only described"):
        native.Instance(m._compiled, native.W64)


@pytest.mark.parametrize("fam", ["f4", "w64"])
def test_both_engines_same_results_and_memory(fam):
    m = load(fam)
    a, b = Instance(m, memory_limit=32 << 20), Instance(m, memory_limit=32 << 20, **AOS_LIMITS)
    assert a.fuel_engine and not b.fuel_engine
    for cmd in ("c", "c", "E", "t", "g", "w", "v", "c", "G"):
        ra, rb = a.handle(cmd, "{}"), b.handle(cmd, "{}")
        assert ra == rb, cmd
        assert ra["GasUsed"] == 0
    assert a.memory() == b.memory() and a.commitment() == b.commitment()
    assert a.last_fuel_used > 0 and b.last_fuel_used == 0  # fuel is counted only where it is enforced


def test_small_compute_limit_still_runs_out_of_gas():
    inst = Instance(load("f4"), compute_limit=10_000_000, timeout_s=30.0)
    assert inst.fuel_engine
    assert inst.handle("l", "{}")["Error"] == "out of gas!"
    assert inst.handle("c", "{}")["Output"] == "1"  # rolled back, still usable
    metered = Instance(load("w64", metered=True), compute_limit=4000, timeout_s=30.0)
    assert not metered.fuel_engine
    r = metered.handle("m", "{}")
    assert r["Error"] == "out of gas!" and r["GasUsed"] == 5000


def test_runaway_loop_stopped_by_timeout_with_the_same_error(monkeypatch):
    m = load("f4")
    free = Instance(m, compute_limit=10**12, timeout_s=0.2)
    assert not free.fuel_engine
    err = free.handle("l", "{}")["Error"]
    assert "wall-clock" in err
    assert free.handle("c", "{}")["Output"] == "1"
    monkeypatch.setattr(engine_module, "FUEL_FREE", False)
    fueled = Instance(m, compute_limit=10**12, timeout_s=0.2)
    assert fueled.fuel_engine
    assert fueled.handle("l", "{}")["Error"] == err


def test_disk_cache_keeps_engines_apart(tmp_path):
    wasm = build("f4")
    clear_process_cache()
    m = Module.load(wasm, FORMAT_OF["f4"], cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.cwasm"))  # a load compiles nothing
    assert Instance(m, **AOS_LIMITS).handle("c", "{}")["Output"] == "1"  # compiles the fuel-free variant
    assert Instance(m).handle("c", "{}")["Output"] == "1"  # no timeout: the fuel engine's variant
    files = sorted(tmp_path.glob("*.cwasm"), key=lambda p: p.stat().st_mtime_ns)[::-1]  # fuel, fuel-free
    assert len(files) == 2 and native.fingerprint(True) != native.fingerprint(False)
    clear_process_cache()
    m2 = Module.load(wasm, FORMAT_OF["f4"], cache_dir=tmp_path)
    inst = Instance(m2, **AOS_LIMITS)
    assert not inst.fuel_engine and inst.handle("c", "{}")["Output"] == "1"
    assert len(list(tmp_path.glob("*.cwasm"))) == 2  # read back, not recompiled
    # wasmtime itself refuses code compiled for the other configuration
    blob = files[0].read_bytes()[len(engine_module._CACHE_MAGIC) + 32:]
    assert native.CompiledModule.deserialize(blob, True).fuel
    with pytest.raises(native.ModuleLoadError):
        native.CompiledModule.deserialize(blob, False)


@pytest.fixture(scope="module")
def lua64() -> Module:
    return Module.load(build_lua("lua64").read_bytes(), MODULES["lua64"].module_format)


def test_lua_module_same_on_both_engines(lua64):
    msg = {"Id": "M", "Owner": "OWNER", "From": "OWNER", "Target": "P", "Data": "",
           "Tags": [{"name": "Action", "value": "Eval"}], "Timestamp": 1730000000000, "Block-Height": 1}
    env = {"Process": {"Id": "P", "Owner": "OWNER", "Tags": []}, "Module": {"Id": "MOD"}}
    a = Instance(lua64, memory_limit=1 << 30)
    b = Instance(lua64, memory_limit=1 << 30, **AOS_LIMITS)
    assert a.fuel_engine and not b.fuel_engine
    for code in ("T = {} for i = 1, 20000 do T[i] = string.rep('x', i % 50) end return #T",
                 "collectgarbage() return #T", "error('boom')", "local s = 0 for i = 1, 1e5 do s = s + i end return s"):
        ra, rb = a.handle({**msg, "Data": code}, env), b.handle({**msg, "Data": code}, env)
        assert ra == rb, code
    assert a.memory() == b.memory()
