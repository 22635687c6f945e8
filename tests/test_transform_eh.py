"""Legacy exception handling -> exnref translation (docs/ABI.md, Legacy exception handling).

Oracles: the original module run natively by V8 (node 20 still implements the legacy opcodes) and
binaryen's `wasm-opt --translate-to-exnref` run in wasmtime. The translated module must validate in
wasmtime (exceptions enabled) and give the same results and traces for every export and input.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import wasmtime
from cu._native import transform as T

from tests.wat_eh.gen import program

HERE = Path(__file__).resolve().parent
WAT_EH = HERE / "wat_eh"
WASM_OPT = HERE / "peers" / "node_modules" / ".bin" / "wasm-opt"
# Not --all-features: binaryen 132 then emits the compact-imports encoding, which wasmtime rejects.
BINARYEN_FEATURES = ["--enable-exception-handling", "--enable-memory64", "--enable-reference-types",
                     "--enable-multivalue", "--enable-simd", "--enable-bulk-memory", "--enable-sign-ext",
                     "--enable-mutable-globals", "--enable-nontrapping-float-to-int"]
INPUTS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 32, 33, 255, 0x1234567, -1, 0xAAAA, 0x5555]



def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} not found (installed by scripts/install.sh)")
    return path


def wat2wasm(text: str, tmp: Path, *extra: str) -> bytes:
    src, out = tmp / "m.wat", tmp / "m.wasm"
    src.write_text(text)
    subprocess.run([_need("wat2wasm"), "--enable-exceptions", *extra, str(src), "-o", str(out)], check=True)
    return out.read_bytes()


def binaryen_translate(wasm: bytes, tmp: Path) -> bytes | None:
    """binaryen's translation, or None where binaryen itself fails (it rejects some valid inputs)."""
    src, out = tmp / "b_in.wasm", tmp / "b_out.wasm"
    src.write_bytes(wasm)
    p = subprocess.run([str(WASM_OPT), *BINARYEN_FEATURES, "--translate-to-exnref", str(src), "-o", str(out)],
                       capture_output=True)
    return out.read_bytes() if p.returncode == 0 else None


def node_legacy(wasm: bytes, tmp: Path, inputs: list[int], only: list[str] | None = None) -> dict[str, list[list[str]]]:
    path = tmp / "legacy.wasm"
    path.write_bytes(wasm)
    sel = [f"--only={','.join(only)}"] if only else []
    p = subprocess.run([_need("node"), str(WAT_EH / "run_legacy.js"), str(path), *sel, *map(str, inputs)],
                       capture_output=True, text=True, check=True, timeout=120)
    return json.loads(p.stdout)


ENGINE_CFG = wasmtime.Config()
ENGINE_CFG.wasm_exceptions = True
ENGINE_CFG.consume_fuel = True  # a runaway program fails the test instead of hanging it
ENGINE = wasmtime.Engine(ENGINE_CFG)


def _trap_import(name: str):  # noqa: ANN202
    def fn(*_args: object) -> None:
        raise RuntimeError(f"import {name} called")
    return fn


def wasmtime_run(wasm: bytes, inputs: list[int], only: list[str] | None = None) -> dict[str, list[list[str]]]:
    """Same protocol as run_legacy.js: fresh instance per call, imports trap, `_initialize` first."""
    module = wasmtime.Module(ENGINE, wasm)
    linker = wasmtime.Linker(ENGINE)
    for imp in module.imports:
        linker.define_func(imp.module, imp.name, imp.type, _trap_import(f"{imp.module}.{imp.name}"))
    out: dict[str, list[list[str]]] = {}
    for exp in module.exports:
        if not isinstance(exp.type, wasmtime.FuncType) or (only and exp.name not in only):
            continue
        rows = []
        for x in inputs:
            store = wasmtime.Store(ENGINE)
            store.set_fuel(100_000_000)
            inst = linker.instantiate(store, module)
            if "_initialize" in inst.exports(store):
                inst.exports(store)["_initialize"](store)
            try:
                v = inst.exports(store)[exp.name](store, x)
                row = [] if v is None else [str(i) for i in v] if isinstance(v, list) else [str(v)]
            except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
                if "exception" not in str(e):
                    raise
                row = ["uncaught"]
            trace = inst.exports(store).get("trace")
            row.append(str(trace.value(store)) if isinstance(trace, wasmtime.Global) else "")
            rows.append(row)
        out[exp.name] = rows
    return out


def check_against_oracles(wasm: bytes, tmp: Path, inputs: list[int] = INPUTS,
                          only: list[str] | None = None) -> bytes:
    assert T.has_legacy_eh(wasm)
    with pytest.raises(wasmtime.WasmtimeError, match="legacy_exceptions"):
        wasmtime.Module(ENGINE, wasm)
    mine = T.translate_legacy_eh(wasm)
    assert not T.has_legacy_eh(mine)
    got = wasmtime_run(mine, inputs, only)
    assert got == node_legacy(wasm, tmp, inputs, only)
    ref = binaryen_translate(wasm, tmp)
    if ref is not None:
        assert got == wasmtime_run(ref, inputs, only)
    return mine


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("cases")
    return wat2wasm((WAT_EH / "cases.wat").read_text(), tmp)


def test_handwritten_cases(cases: bytes, tmp_path: Path) -> None:
    mine = check_against_oracles(cases, tmp_path)
    # binaryen handles every hand-written case, so both oracles were consulted.
    assert binaryen_translate(cases, tmp_path) is not None
    # Translating again is a no-op: the output has no legacy opcodes.
    assert T.translate_legacy_eh(mine) == mine


def test_module_without_legacy_eh_is_unchanged() -> None:
    plain = wasmtime.wat2wasm('(module (tag $t) (func (export "f") (throw $t)) (func (result i32) i32.const 1))')
    assert not T.has_legacy_eh(plain)
    assert T.translate_legacy_eh(plain) == plain


def test_memory64_and_prefixed_opcodes_are_copied(tmp_path: Path) -> None:
    text = """(module
      (tag $e (param i64))
      (memory i64 1)
      (func (export "f") (param i32) (result i64)
        i64.const 8 i64.const 0x1122334455667788 i64.store offset=16
        try (result i64)
          i64.const 0 i32.const 7 i32.store8 offset=65535
          i64.const 0 i64.const 0 i64.const 4 memory.copy
          local.get 0 if i64.const 8 i64.load offset=16 throw $e end
          i64.const 24 v128.load offset=0 i64x2.extract_lane 1
        catch $e
          i64.const 1 i64.add
        end))"""
    wasm = wat2wasm(text, tmp_path, "--enable-memory64")
    cfg = wasmtime.Config()
    cfg.wasm_exceptions = True
    cfg.wasm_memory64 = True
    engine = wasmtime.Engine(cfg)
    for translated in (T.translate_legacy_eh(wasm), binaryen_translate(wasm, tmp_path)):
        assert translated is not None
        store = wasmtime.Store(engine)
        f = wasmtime.Instance(store, wasmtime.Module(engine, translated), []).exports(store)["f"]
        assert f(store, 1) == 0x1122334455667789
        assert f(store, 0) == 0


@pytest.mark.parametrize("seed", range(15))
def test_random_programs(seed: int, tmp_path: Path) -> None:
    check_against_oracles(wat2wasm(program(seed), tmp_path), tmp_path, INPUTS[:10])


@pytest.mark.parametrize("seed", range(10))
def test_random_typed_programs(seed: int, tmp_path: Path) -> None:
    """Value-carrying blocks and tries ((result i32), (param i32) (result i32)) and branches to them."""
    check_against_oracles(wat2wasm(program(seed, typed=True), tmp_path), tmp_path, INPUTS[:10])


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2000, 2030))
def test_random_typed_programs_deep(seed: int, tmp_path: Path) -> None:
    check_against_oracles(wat2wasm(program(seed, funcs=4, depth=5, typed=True), tmp_path), tmp_path, INPUTS[:10])


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1000, 1040))
def test_random_programs_deep(seed: int, tmp_path: Path) -> None:
    check_against_oracles(wat2wasm(program(seed, funcs=4, depth=5), tmp_path), tmp_path, INPUTS[:10])


@pytest.mark.slow
def test_emscripten_cpp_exceptions(tmp_path: Path, cache_dir: Path) -> None:
    """C++ try/catch/rethrow compiled by emscripten 3.1.6 with -fwasm-exceptions (legacy opcodes)."""
    src = WAT_EH / "cpp_eh.cpp"
    out = cache_dir / f"cpp_eh-{hashlib.sha256(src.read_bytes()).hexdigest()[:16]}.wasm"
    if not out.exists():
        from tests.modules.build import emscripten_env

        tmp_out = tmp_path / "cpp_eh.wasm"
        subprocess.run([_need("em++"), "-O2", "-fwasm-exceptions", "-sSTANDALONE_WASM", "--no-entry",
                        "-sEXPORTED_FUNCTIONS=_run", str(src), "-o", str(tmp_out)],
                       env=emscripten_env(True), check=True, capture_output=True)
        tmp_out.replace(out)
    wasm = out.read_bytes()
    check_against_oracles(wasm, tmp_path, [0, 3, 5, 6, 19, 50, 53, 57, 100, -4], only=["run"])


def _body(code: bytes) -> bytes:
    """A module with one function () -> () whose body (after the locals) is `code`, plus one tag."""
    func = b"\x00" + code
    sec = lambda i, p: bytes([i, len(p)]) + p  # noqa: E731
    return (b"\0asm\x01\0\0\0" + sec(1, b"\x01\x60\x00\x00") + sec(3, b"\x01\x00")
            + sec(13, b"\x01\x00\x00") + sec(10, b"\x01" + bytes([len(func)]) + func))


@pytest.mark.parametrize(("code", "why"), [
    (b"\x07\x00\x0b", "catch outside try"),
    (b"\x06\x40\x19\x07\x00\x0b\x0b", "catch after catch_all"),
    (b"\x06\x40\x0b\x09\x00\x0b", "rethrow target is not a catch"),
    (b"\x06\x40\x18\x05\x0b", "delegate depth out of range"),
    (b"\x06\x40\x07\x05\x0b\x0b", "tag index 5 out of range"),
    (b"\x06\x40\x0c\x07\x0b\x0b", "branch depth out of range"),
    (b"\x06\x40", "missing its end"),
    (b"\x06\x40\xff\x0b\x0b", "unsupported opcode 0xff"),
])
def test_malformed_bodies_are_clear_errors(code: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        T.translate_legacy_eh(_body(code))


@pytest.mark.parametrize("bad", [b"", b"\0asm\x02\0\0\0", b"\0asm\x01\0\0\0\x0a\x09\x01", b"\x7fELF" + bytes(12)])
def test_malformed_modules_are_clear_errors(bad: bytes) -> None:
    for fn in (T.translate_legacy_eh, T.has_legacy_eh):
        with pytest.raises(ValueError, match="invalid wasm"):
            fn(bad)


@pytest.mark.slow
def test_lua64_module_runs_identically_to_binaryen_translation(tmp_path: Path) -> None:
    """The project's wasm64 Lua module (-fwasm-exceptions: Lua errors are legacy try/catch/throw)."""
    from tests.modules.build import MODULES, build
    from tests.modules.pyhost import PyHost
    from tests.test_modules import ENV, message

    info = MODULES["lua64"]
    wasm = build("lua64").read_bytes()
    assert T.has_legacy_eh(wasm)
    mine = T.translate_legacy_eh(wasm)
    assert not T.has_legacy_eh(mine)
    ref = binaryen_translate(wasm, tmp_path)
    assert ref is not None
    script = [
        ("Echo", "hi"), ("Count", ""), ("Eval", "error('boom')"), ("Count", ""),
        ("Eval", "local ok, e = pcall(function() error({code = 7}) end); return tostring(ok) .. e.code"),
        ("Eval", "local function f(n) if n == 0 then error('deep') end return f(n - 1) end; "
                 "return select(2, pcall(f, 50))"),
        ("Eval", "return ('x'):rep(3) .. nil"), ("Fail", "now"), ("Count", ""),
    ]
    outputs = []
    for wasm_variant in (mine, ref):
        host = PyHost(wasm_variant, memory64=True, boot=info.boot, compat=info.compat, exceptions=True)
        outputs.append([host.handle(message(a, d, i + 1), ENV) for i, (a, d) in enumerate(script)])
    assert outputs[0] == outputs[1]
    got = outputs[0]
    assert got[2] == {"ok": True, "response": {"Error": '[string "aos"]:1: boom'}}
    assert got[3]["response"]["Output"] == 2
    assert got[4]["response"]["Output"]["data"] == "false7"
    assert got[5]["response"]["Output"]["data"].endswith("deep")
    assert got[7]["ok"] is False and got[8]["response"]["Output"] == 3


def test_mutated_modules_never_crash(cases: bytes) -> None:
    """Random byte flips, truncations and insertions: every result is a module or a ValueError."""
    import random

    rng = random.Random(1)
    m1 = wasmtime.wat2wasm('(module (func (export "f") (param i32) (result i32) local.get 0 i32.const 1 i32.add))')
    for base in (cases, m1):
        for _ in range(1500):
            b = bytearray(base)
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(3)
                i = rng.randrange(8, len(b))
                if op == 0:
                    b[i] = rng.randrange(256)
                elif op == 1:
                    del b[i:]
                else:
                    b[i:i] = bytes([rng.randrange(256)])
                if len(b) <= 8:
                    break
            for fn in (T.has_legacy_eh, T.translate_legacy_eh, lambda w: T.meter(w, False)):
                try:
                    fn(bytes(b))
                except ValueError:
                    pass
