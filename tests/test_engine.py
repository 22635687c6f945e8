"""cu.engine on hand-written WAT modules (tests/wat): every format family, host ABI details, limits,
errors, rollback, snapshots and the compiled-module cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest
import wasmtime

from cu import _native
from cu.engine import FORMATS, EngineError, Instance, Module, ModuleError, Snapshot, SnapshotError
from cu.engine.instance import _json_bytes
from cu.engine.module import clear_process_cache
from tests.wat.gen import FORMAT_OF, build

FAMS = ["f1", "f2", "f3", "f4", "w64"]


def load(fam: str, metered: bool = False) -> Module:
    return Module.load(build(fam, metered), FORMAT_OF[fam])


def out(r: dict):
    assert "Error" not in r, r
    return r["Output"]


def test_formats_are_the_seven_legacy_strings():
    assert len(FORMATS) == 7
    assert FORMATS[0] == "wasm32-unknown-emscripten"
    assert "wasm64-unknown-emscripten-draft_2024_10_16-metering" in FORMATS


@pytest.mark.parametrize("fam", FAMS)
def test_counter_persists_and_errors_roll_back(fam):
    inst = Instance(load(fam), compute_limit=10_000_000, memory_limit=32 << 20)
    assert out(inst.handle("c", "{}")) == "1"
    assert out(inst.handle("c", "{}")) == "2"
    # each of these changes the counter before failing: the change must not survive
    errors = {
        "E": "bad thing",
        "f": "boom",
        "t": "unreachable",
        "l": "out of gas!",
        "a": "abort",
        "g": "memory limit",
        "b": "invalid JSON",
        "u": "unterminated string",
        "n": "NULL",
    }
    for cmd, text in errors.items():
        r = inst.handle(cmd, "{}")
        assert set(r) == {"Error", "GasUsed"}, (cmd, r)
        assert text in r["Error"], (cmd, r)
        assert out(inst.handle("c", "{}")) == str(3 + list(errors).index(cmd)), cmd
    assert out(inst.handle("G", "{}")) == str(7 + 2 + len(errors))  # exported global rolled back too


@pytest.mark.parametrize("fam", FAMS)
def test_longjmp_through_invoke_restores_stack(fam):
    inst = Instance(load(fam))
    assert out(inst.handle("j", "{}")) == "1/0"  # setThrew(1, 0) called, stack pointer restored


@pytest.mark.parametrize("fam,expected", [("f1", "-1/0"), ("f2", "-1/0"), ("f3", "-52/0"), ("f4", "-52/0"),
                                          ("w64", "-52/0")])
def test_system_is_never_executed(fam, expected):
    assert out(Instance(load(fam)).handle("x", "{}")) == expected


@pytest.mark.parametrize("fam,expected", [("f1", "7/94"), ("f2", "7/94"), ("f3", "7/94"), ("f4", "0/0"),
                                          ("w64", "0/0")])
def test_environment_choice(fam, expected):
    assert out(Instance(load(fam)).handle("v", "{}")) == expected


@pytest.mark.parametrize("fam,expected", [("f1", "1/1/00000000"), ("f2", "1/2/00000000"), ("f3", "1/1/00000000"),
                                          ("f4", "1/0/656d7363"), ("w64", "1/0/656d7363")])
def test_lifecycle(fam, expected):
    # ctors always; main (argc+1) for formats 1-3 (format 2 passes argv=[program]); stack cookie for 4/wasm64
    assert out(Instance(load(fam)).handle("i", "{}")) == expected


@pytest.mark.parametrize("fam", FAMS)
def test_utc_time_functions(fam):
    assert out(Instance(load(fam)).handle("d", "{}")) == "2024-10-27 03:33:20 Sun 301 GMT"


@pytest.mark.parametrize("fam", ["f2", "f4", "w64"])
def test_urandom_is_deterministic_per_message(fam):
    m = load(fam)
    a = out(Instance(m).handle("r", "{}"))
    b = out(Instance(m).handle("r", "{}"))
    c = out(Instance(m).handle("r-other", "{}"))
    assert a == b and len(a) == 16 and a != c


@pytest.mark.parametrize("fam", ["f2", "f3", "f4", "w64"])
def test_memfs_roundtrip(fam):
    assert out(Instance(load(fam)).handle("w", "{}")) == "hello"


def test_fuel_limit_and_wall_clock_backstop():
    m = load("f4")
    assert Instance(m, compute_limit=1000).handle("l", "{}")["Error"] == "out of gas!"
    r = Instance(m, timeout_s=0.2).handle("l", "{}")
    assert "wall-clock" in r["Error"]


_TICKER_PROBE = """
import sys, time, threading
from pathlib import Path
from cu.engine import Instance, Module
from tests.wat.gen import FORMAT_OF, build

def switches():
    n = 0
    for t in Path("/proc/self/task").iterdir():
        for line in (t / "status").read_text().splitlines():
            if "ctxt_switches:" in line:
                n += int(line.split()[1])
    return n

m = Module.load(build("f4", False), FORMAT_OF["f4"])
inst = Instance(m, timeout_s=0.6)
assert inst.handle("c", "{}")["Output"] == "1"
time.sleep(0.3)
a = switches(); time.sleep(1.0); idle = switches() - a
a = switches(); t0 = time.monotonic()
r = Instance(m, timeout_s=0.6).handle("l", "{}")
took = time.monotonic() - t0; busy = switches() - a
print(idle, busy, round(took, 3), r["Error"])
"""


def test_epoch_ticker_parks_when_idle_and_still_interrupts():
    """The epoch ticker wakes only while wasm runs: an idle process with a live instance is not woken 200 times
    a second, and a runaway call after the idle spell is still interrupted at its wall-clock limit."""
    repo = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "-c", _TICKER_PROBE], cwd=repo, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(repo)})
    assert run.returncode == 0, run.stderr
    idle, busy, took, error = run.stdout.split(maxsplit=3)
    assert "wall-clock limit exceeded" in error and 0.55 <= float(took) < 5.0, run.stdout
    # the ticker ticks every 5 ms during the 0.6 s loop (~120 wake-ups) and not at all in the idle second
    assert int(busy) >= 40, run.stdout
    assert int(idle) < 20, run.stdout


def test_memory_bomb_without_limit_stops_at_module_maximum():
    inst = Instance(load("w64"))
    r = inst.handle("g", "{}")
    assert r["Error"] == "not enough memory"
    assert out(inst.handle("c", "{}")) == "1"


@pytest.mark.parametrize("fam", ["f2", "w64"])
def test_metering_usegas(fam):
    m = load(fam, metered=True)
    r = Instance(m).handle("m", "{}")
    assert r["GasUsed"] == 5000 and out(r) == "1"
    inst = Instance(m, compute_limit=4000)
    r = inst.handle("m", "{}")
    assert r["Error"] == "out of gas!" and r["GasUsed"] == 5000
    assert out(Instance(load(fam)).handle("c", "{}")) == "1"
    assert Instance(load(fam)).handle("c", "{}")["GasUsed"] == 0  # non-metered modules report 0


def test_dict_str_and_bytes_inputs():
    inst = Instance(load("f4"))
    assert out(inst.handle(b"zbytes", b"{}")) == "bytes"
    assert _json_bytes({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()  # compact, raw UTF-8
    resp, err, gas = inst.handle_raw(b"c", b"{}")
    assert err is None and json.loads(resp)["Output"] == "1" and gas == 0


def test_result_lists_are_normalised():
    r = Instance(load("f3")).handle("c", "{}")
    assert r["Messages"] == [] and r["Spawns"] == [] and r["Assignments"] == []


def test_malformed_and_unknown_inputs_are_clear_errors():
    with pytest.raises(ModuleError, match="Module-Format"):
        Module.load(build("f4"), "wasm32-unknown-emscripten9")
    with pytest.raises(ModuleError, match="not a wasm binary"):
        Module.load(b"hello", FORMAT_OF["f4"])
    with pytest.raises(ModuleError, match="invalid wasm module"):
        Module.load(b"\0asm\x01\0\0\0\x01\xff", FORMAT_OF["f4"])
    with pytest.raises(ModuleError, match="env.not_a_real_import"):
        Module.load(wasmtime.wat2wasm('(module (import "env" "not_a_real_import" (func)) (memory (export "memory") 1)'
                                      ' (func (export "handle") (param i32 i32) (result i32) i32.const 0))'),
                    FORMAT_OF["f4"])
    with pytest.raises(ModuleError, match="unsupported signature"):
        Module.load(wasmtime.wat2wasm('(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32)))'
                                      ' (memory (export "memory") 1)'
                                      ' (func (export "handle") (param i32 i32) (result i32) i32.const 0))'),
                    FORMAT_OF["f4"])
    with pytest.raises(ModuleError, match="handle"):
        Module.load(wasmtime.wat2wasm('(module (memory (export "memory") 1))'), FORMAT_OF["f4"])
    with pytest.raises(ModuleError, match="expected jj:j"):  # a wasm32 module declared as wasm64
        Module.load(build("f4"), FORMAT_OF["w64"])


def test_metering_formats_need_the_transform():
    fmt = "wasm32-unknown-emscripten-metering"
    if hasattr(getattr(_native, "transform", None), "meter"):
        m = Module.load(build("f4"), fmt)
        r = Instance(m).handle("c", "{}")
        assert out(r) == "1" and r["GasUsed"] > 0
    else:
        with pytest.raises(ModuleError, match="not available in this build"):
            Module.load(build("f4"), fmt)


@pytest.mark.parametrize("fam", FAMS)
def test_snapshot_roundtrip_is_bit_identical(fam):
    m = load(fam)
    a = Instance(m)
    for _ in range(3):
        a.handle("c", "{}")
    a.handle("w", "{}")
    data = a.snapshot().to_bytes()
    snap = Snapshot.from_bytes(data)
    assert snap.module_hash == m.hash
    b = Instance.restore(m, snap)
    assert a.memory() == b.memory()
    for cmd in ["c", "G", "r", "d"]:
        assert a.handle(cmd, "{}") == b.handle(cmd, "{}")
    assert out(b.handle("G", "{}")) == out(a.handle("G", "{}")) == "11"
    assert a.memory() == b.memory()


def test_snapshot_root_and_verification():
    if not hasattr(getattr(_native, "merkle", None), "PageMerkle"):
        pytest.skip("page-Merkle not in this build (engineer 'transforms')")
    m = load("f4")
    a = Instance(m)
    a.handle("c", "{}")
    r1 = a.commitment()
    a.handle("c", "{}")
    r2 = a.commitment()
    assert len(r1) == 32 and r1 != r2
    snap = a.snapshot()
    assert snap.memory_root == r2
    Instance.restore(m, snap, verify=True)


def test_snapshot_refusals():
    m = load("f4")
    data = Instance(m).snapshot().to_bytes()
    with pytest.raises(SnapshotError):
        Snapshot.from_bytes(b"not msgpack at all \xc1")
    env = msgpack.unpackb(data, raw=False)
    env["v"] = 0
    with pytest.raises(SnapshotError, match="version 0"):
        Snapshot.from_bytes(msgpack.packb(env, use_bin_type=True))
    env["v"] = 1
    env["memory"] = env["memory"][:30]
    with pytest.raises(SnapshotError):
        Instance.restore(m, Snapshot.from_bytes(msgpack.packb(env, use_bin_type=True)))
    with pytest.raises(SnapshotError, match="belongs to module"):
        Instance.restore(load("f3"), Snapshot.from_bytes(data))


def test_compiled_module_cache(tmp_path):
    wasm = build("w64")
    clear_process_cache()
    m1 = Module.load(wasm, FORMAT_OF["w64"], cache_dir=tmp_path)
    Instance(m1)  # a load only validates; the first instance compiles (and caches) the variant it runs
    files = list(tmp_path.glob("*.cwasm"))
    assert len(files) == 1
    clear_process_cache()
    m2 = Module.load(wasm, FORMAT_OF["w64"], cache_dir=tmp_path)
    assert m1.hash == m2.hash and out(Instance(m2).handle("c", "{}")) == "1"
    files[0].write_bytes(files[0].read_bytes()[:-10] + b"corrupted!")
    clear_process_cache()
    m3 = Module.load(wasm, FORMAT_OF["w64"], cache_dir=tmp_path)  # integrity check fails -> recompiled
    assert out(Instance(m3).handle("c", "{}")) == "1"


def test_memory_accessors():
    inst = Instance(load("w64"))
    assert inst.memory_size == 2 * 65536 == len(inst.memory())
    inst.handle("c", "{}")
    assert int.from_bytes(inst.memory()[1024:1028], "little") == 1


def _legacy_eh_wasm(tmp_path) -> bytes:
    # wabt (apt, scripts/install.sh) still writes the legacy try/catch opcodes wasmtime rejects
    out = tmp_path / "legacy_eh.wasm"
    wat = Path(__file__).resolve().parent / "wat" / "legacy_eh.wat"
    subprocess.run(["wat2wasm", "--enable-exceptions", "--enable-memory64", str(wat), "-o", str(out)], check=True)
    return out.read_bytes()


def test_legacy_exception_handling_is_translated(tmp_path):
    wasm = _legacy_eh_wasm(tmp_path)
    with pytest.raises(wasmtime.WasmtimeError, match="legacy_exceptions"):
        cfg = wasmtime.Config()
        cfg.wasm_exceptions = True
        cfg.wasm_memory64 = True
        wasmtime.Module(wasmtime.Engine(cfg), wasm)  # what wasmtime says without the translation
    inst = Instance(Module.load(wasm, FORMAT_OF["w64"], cache_dir=tmp_path))
    assert out(inst.handle("t", "{}")) == "caught:42"  # strings allocated with malloc (no stack allocator)
    assert inst.handle("u", "{}")["Error"] == "wasm trap: thrown Wasm exception"  # uncaught -> Error
    assert out(inst.handle("t", "{}")) == "caught:42"


INVOKE_WAT = """
(module
  (import "env" "invoke_iii" (func $invoke_iii (param i32 i32 i32) (result i32)))
  (import "env" "invoke_di" (func $invoke_di (param i32 i32) (result f64)))
  (import "env" "metering_gasUsed" (func $gas (result i32)))
  (memory (export "memory") 1)
  (table (export "__indirect_function_table") 4 funcref)
  (elem (i32.const 1) func $add $half)
  (global $sp (mut i32) (i32.const 60000))
  (func $add (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func $half (param i32) (result f64) (f64.div (f64.convert_i32_s (local.get 0)) (f64.const 2)))
  (func (export "_emscripten_stack_alloc") (param i32) (result i32)
    (global.set $sp (i32.and (i32.sub (global.get $sp) (local.get 0)) (i32.const -16))) (global.get $sp))
  (func (export "emscripten_stack_get_current") (result i32) (global.get $sp))
  (func (export "_emscripten_stack_restore") (param i32) (global.set $sp (local.get 0)))
  (data (i32.const 100) "{\\"ok\\":true,\\"response\\":{\\"Output\\":\\"")
  (func (export "handle") (param i32 i32) (result i32)
    ;; Output = the sum as one digit; invoke_di(half, 9) must give 4.5; metering_gasUsed must be 0
    (local $s i32)
    (local.set $s (call $invoke_iii (i32.const 1) (i32.const 3) (i32.const 4)))
    (if (f64.ne (call $invoke_di (i32.const 2) (i32.const 9)) (f64.const 4.5)) (then unreachable))
    (if (call $gas) (then unreachable))
    (i32.store8 (i32.const 133) (i32.add (i32.const 48) (local.get $s)))
    (i32.store8 (i32.const 134) (i32.const 34))
    (i32.store16 (i32.const 135) (i32.const 0x7d7d))
    (i32.store8 (i32.const 137) (i32.const 0))
    (i32.const 100))
)
"""


def test_generic_invoke_signatures():
    m = Module.load(wasmtime.wat2wasm(INVOKE_WAT), FORMAT_OF["f4"])
    assert out(Instance(m).handle("x", "{}")) == "7"
    bad = INVOKE_WAT.replace('"invoke_iii" (func $invoke_iii (param i32 i32 i32)', '"invoke_iii" (func $invoke_iii (param i32 i32)')
    with pytest.raises(ModuleError, match="invoke_iii"):
        Module.load(wasmtime.wat2wasm(bad.replace("(i32.const 1) (i32.const 3) (i32.const 4)", "(i32.const 1) (i32.const 3)")),
                    FORMAT_OF["f4"])


def test_concurrent_use_is_refused_not_corrupting():
    inst = Instance(load("f4"), timeout_s=1.0)
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("loop", inst.handle("l", "{}")))
    t.start()
    time.sleep(0.2)
    with pytest.raises(EngineError, match="busy"):
        inst.handle("c", "{}")
    t.join()
    assert res["loop"]["Error"] == "wall-clock limit exceeded: execution interrupted after 1 s"
    assert out(inst.handle("c", "{}")) == "1"
