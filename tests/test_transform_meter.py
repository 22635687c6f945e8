"""The metering rewrite (docs/ABI.md, Limits and gas): hand-computed costs, index shifting, refusals, and byte equality with
the reference implementation (@permaweb/wasm-metering, under tests/peers)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import wasmtime
from cu._native import transform as T

HERE = Path(__file__).resolve().parent
METER_REF = HERE / "wat_eh" / "meter_ref.js"
PEER = HERE / "peers" / "node_modules" / "@permaweb" / "wasm-metering"

M1 = """(module
  (import "env" "a" (func $a (param i32) (result i32)))
  (import "env" "mem" (memory 1))
  (import "env" "b" (func $b (param i32) (result i32)))
  (type $t (func (param i32) (result i32)))
  (table 4 funcref)
  (elem (i32.const 0) $a $double $b $triple)
  (global $g (mut i32) (i32.const 0))
  (func $double (type $t) local.get 0 i32.const 2 i32.mul)
  (func $triple (type $t) local.get 0 i32.const 3 i32.mul)
  (func $init global.get $g i32.const 1 i32.add global.set $g)
  (start $init)
  (func (export "f") (param i32) (result i32) local.get 0 i32.const 1 i32.add)
  (func (export "loop") (param $n i32) (local $i i32)
    (block (loop
      local.get $i local.get $n i32.ge_u br_if 1
      local.get $i i32.const 1 i32.add local.set $i
      br 0)))
  (func (export "calls") (param i32) (result i32)
    local.get 0 call $double call $a local.get 0 i32.const 1 call_indirect (type $t) i32.add
    local.get 0 i32.const 3 call_indirect (type $t) i32.add global.get $g i32.add)
  (func (export "ops") (param i32 i64 f32 f64) (result i32)
    local.get 0 i32.const 7 i32.div_s local.get 0 i32.const 3 i32.rem_u i32.add
    local.get 1 i64.const 5 i64.shl i64.const 3 i64.rotl i32.wrap_i64 i32.add
    local.get 2 f32.sqrt local.get 2 f32.add f32.const 1.5 f32.lt i32.add
    local.get 3 f64.neg f64.const 2 f64.div i32.trunc_f64_s i32.add
    i32.const 0 i32.load i32.add i32.const 4 local.get 0 i32.store8 offset=3
    memory.size i32.add i32.const 0 memory.grow drop i32.extend8_s
    local.get 0 if (result i32) i32.const 1 else i32.const 2 end i32.add
    (block (br_table 0 0 (local.get 0))) nop
    (select (i32.const 1) (i32.const 2) (local.get 0)) i32.add)
)"""


class Run:
    """Instantiates a module with env.a/env.b/env.mem and, if metered, metering.usegas adding to .gas."""

    def __init__(self, wasm: bytes, i64: bool = False) -> None:
        self.gas = 0
        engine = wasmtime.Engine()
        self.store = wasmtime.Store(engine)
        module = wasmtime.Module(engine, wasm)
        linker = wasmtime.Linker(engine)
        i32 = wasmtime.ValType.i32()
        fty = wasmtime.FuncType([i32], [i32])
        linker.define_func("env", "a", fty, lambda x: x + 1000)
        linker.define_func("env", "b", fty, lambda x: x + 2000)
        linker.define(self.store, "env", "mem", wasmtime.Memory(self.store, wasmtime.MemoryType(wasmtime.Limits(1, None))))
        meter_t = wasmtime.ValType.i64() if i64 else i32

        def usegas(n: int) -> None:
            self.gas += n

        if any(i.module == "metering" for i in module.imports):
            linker.define_func("metering", "usegas", wasmtime.FuncType([meter_t], []), usegas)
        self.ex = linker.instantiate(self.store, module).exports(self.store)

    def __call__(self, name: str, *args: object) -> tuple[object, int]:
        before = self.gas
        return self.ex[name](self.store, *args), self.gas - before


@pytest.fixture(scope="module")
def m1() -> bytes:
    return wasmtime.wat2wasm(M1)


def test_usegas_import_is_appended_after_existing_imports(m1: bytes) -> None:
    engine = wasmtime.Engine()
    for i64 in (False, True):
        mod = wasmtime.Module(engine, T.meter(m1, i64))
        names = [(i.module, i.name) for i in mod.imports]
        assert names == [("env", "a"), ("env", "mem"), ("env", "b"), ("metering", "usegas")]
        ty = mod.imports[3].type
        assert [str(p) for p in ty.params] == ["i64" if i64 else "i32"] and list(ty.results) == []


@pytest.mark.parametrize("i64", [False, True])
def test_hand_computed_costs(m1: bytes, i64: bool) -> None:
    r = Run(T.meter(m1, i64), i64)
    # start function $init ran once at instantiation: get_global 120 + const 1 + add 45 + set_global 120 + end.
    assert r.gas == 286 + 91
    # f: get_local 120 + const 1 + add 45 + end 0 = 166, one segment -> 166 + 91.
    assert r("f", 41) == (42, 257)
    # loop: [block loop] = 2 -> 93; [get get ge_u br_if] = 375 -> 466; [get const add set br] = 376 -> 467;
    # the three `end`s cost 0 and are not charged.  n iterations: 93 + n * (466 + 467) + 466.
    for n in (0, 1, 5, 100):
        assert r("loop", n) == (None, 93 + 933 * n + 466)
    # ops: one segment up to memory.grow (83661 -> 83752), [drop extend8_s get if] 241 -> 332,
    # then-branch [const else] 91 -> 182 or else-branch [const end] 1 -> 92, [add block get br_table] 286 -> 377,
    # [end] 0, [nop const const get select add end] 288 -> 379.
    assert r("ops", 5, 2, 4.0, 8.0)[1] == 83752 + 332 + 182 + 377 + 379
    assert r("ops", 0, 2, 4.0, 8.0)[1] == 83752 + 332 + 92 + 377 + 379


def test_index_shifting_keeps_behaviour(m1: bytes) -> None:
    plain, metered = Run(m1), Run(T.meter(m1, False))
    for x in (0, 3, 17):
        v, gas = metered("calls", x)
        assert v == plain("calls", x)[0] == (2 * x + 1000) + (2 * x) + (3 * x) + 1
        assert gas > 0
    assert metered("ops", 9, 1, 2.0, 3.0)[0] == plain("ops", 9, 1, 2.0, 3.0)[0]


def test_gas_grows_with_work(m1: bytes) -> None:
    r = Run(T.meter(m1, True), True)
    gas = [r("loop", n)[1] for n in (10, 100, 1000)]
    assert gas[0] < gas[1] < gas[2]


REFUSED = {
    "simd": "(module (func (result i32) v128.const i32x4 1 2 3 4 i32x4.extract_lane 0))",
    "bulk": "(module (memory 1) (func (memory.copy (i32.const 0) (i32.const 1) (i32.const 2))))",
    "sat": "(module (func (param f32) (result i32) local.get 0 i32.trunc_sat_f32_s))",
    "reftypes": "(module (func (result i32) ref.null func ref.is_null))",
    "multivalue": "(module (func (result i32 i32) (block (result i32 i32) i32.const 1 i32.const 2)))",
    "usegas": '(module (import "metering" "usegas" (func (param i32))))',
    "passive": "(module (table 1 funcref) (func $f) (elem func $f))",
    "exnref": "(module (tag $t) (func (try_table (catch_all 0) (throw $t))))",
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refuses_what_the_reference_cannot_meter(case: str) -> None:
    wasm = wasmtime.wat2wasm(REFUSED[case])
    with pytest.raises(ValueError, match="cannot meter this module"):
        T.meter(wasm, False)


def test_refuses_legacy_exception_handling() -> None:
    # (tag) (func try catch_all end) encoded by hand: no text tool in this file speaks the legacy opcodes.
    func = b"\x00\x06\x40\x19\x0b\x0b"
    wasm = (b"\0asm\x01\0\0\0" + b"\x01\x04\x01\x60\x00\x00" + b"\x03\x02\x01\x00" + b"\x0d\x03\x01\x00\x00"
            + b"\x0a" + bytes([len(func) + 2, 1, len(func)]) + func)
    assert T.has_legacy_eh(wasm)
    with pytest.raises(ValueError, match="cannot meter this module.*opcode 0x06"):
        T.meter(wasm, True)


@pytest.mark.parametrize("bad", [b"", b"\0asm", b"\0asm\x01\0\0\0\x0a\x05", b"nope" * 4, b"\0asm\x01\0\0\0\x0a\x04\x01\x02\x00\x0b"])
def test_malformed_input_is_a_clear_error(bad: bytes) -> None:
    with pytest.raises(ValueError, match="invalid wasm|cannot meter"):
        T.meter(bad, False)


def _reference_meter(wasm: bytes, tmp: Path, meter_type: str) -> bytes:
    if shutil.which("node") is None or not PEER.is_dir():
        raise RuntimeError("the metering peer is not installed: run scripts/install.sh --test")
    src, out = tmp / "in.wasm", tmp / "out.wasm"
    src.write_bytes(wasm)
    subprocess.run(["node", str(METER_REF), str(src), str(out), meter_type], check=True, capture_output=True)
    return out.read_bytes()


@pytest.mark.parametrize("meter_type", ["i32", "i64"])
def test_byte_identical_to_reference_on_wat(m1: bytes, tmp_path: Path, meter_type: str) -> None:
    assert T.meter(m1, meter_type == "i64") == _reference_meter(m1, tmp_path, meter_type)
    # No type/import section yet: both are created in place.
    bare = wasmtime.wat2wasm('(module (func (export "x") (result i32) i32.const 1 i32.const 2 i32.add))')
    assert T.meter(bare, meter_type == "i64") == _reference_meter(bare, tmp_path, meter_type)


@pytest.mark.slow
def test_byte_identical_to_reference_on_lua_module(tmp_path: Path) -> None:
    from tests.modules.build import build

    wasm = build("lua32-lazy").read_bytes()
    assert T.meter(wasm, False) == _reference_meter(wasm, tmp_path, "i32")
