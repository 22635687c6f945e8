"""The project's test process modules: recipes build, binaries look like real AO modules of their
Module-Format (ao-ABI §3 import names/signatures, §6 exports), EH opcodes as intended, and the modules
run under an independent wasmtime-py host (tests/modules/pyhost.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.modules import build as recipes
from tests.modules.build import export_name
from tests.modules.pyhost import PyHost
from tests.modules.wasmedit import FORMAT1_EXPORTS, FORMAT1_IMPORTS
from tests.modules.wasminfo import parse

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
WASM_OPT = REPO / "tests" / "peers" / "node_modules" / ".bin" / "wasm-opt"

I32, I64, F64 = "i32", "i64", "f64"


def sig(params: str, results: str = "") -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(params.split()), tuple(results.split())


# ao-ABI §3.2: import names and signatures of the wasm32 formats (env unless noted wasi).
WASI = "wasi_snapshot_preview1"
_WASI32 = {
    (WASI, "fd_write"): sig("i32 i32 i32 i32", I32), (WASI, "fd_read"): sig("i32 i32 i32 i32", I32),
    (WASI, "fd_close"): sig("i32", I32), (WASI, "fd_seek"): sig("i32 i32 i32 i32 i32", I32),
    (WASI, "fd_sync"): sig("i32", I32), (WASI, "fd_fdstat_get"): sig("i32 i32", I32),
    (WASI, "environ_get"): sig("i32 i32", I32), (WASI, "environ_sizes_get"): sig("i32 i32", I32),
}
_SYS32 = {
    "__syscall_openat": sig("i32 i32 i32 i32", I32), "__syscall_fcntl64": sig("i32 i32 i32", I32),
    "__syscall_ioctl": sig("i32 i32 i32", I32), "__syscall_dup3": sig("i32 i32 i32", I32),
    "__syscall_unlinkat": sig("i32 i32 i32", I32), "__syscall_rmdir": sig("i32", I32),
    "__syscall_renameat": sig("i32 i32 i32 i32", I32), "__syscall_readlinkat": sig("i32 i32 i32 i32", I32),
    "__syscall_lstat64": sig("i32 i32", I32), "__syscall_stat64": sig("i32 i32", I32),
    "__syscall_fstat64": sig("i32 i32", I32),
    "exit": sig("i32"), "invoke_vii": sig("i32 i32 i32"), "_emscripten_throw_longjmp": sig(""),
    "emscripten_resize_heap": sig("i32", I32), "emscripten_get_heap_max": sig("", I32),
    "emscripten_get_now": sig("", F64), "_emscripten_get_now_is_monotonic": sig("", I32),
    "_mktime_js": sig("i32", I32), "strftime": sig("i32 i32 i32 i32", I32),
}
FORMAT2 = {**_WASI32, **{("env", k): v for k, v in {
    **_SYS32, "abort": sig(""), "system": sig("i32", I32), "getTempRet0": sig("", I32),
    "setTempRet0": sig("i32"), "emscripten_memcpy_big": sig("i32 i32 i32"), "_emscripten_date_now": sig("", F64),
    "_tzset_js": sig("i32 i32 i32"), "_localtime_js": sig("i32 i32"), "_gmtime_js": sig("i32 i32"),
}.items()}}
FORMAT3 = {**_WASI32, **{("env", k): v for k, v in {
    **_SYS32, "abort": sig(""), "_emscripten_system": sig("i32", I32), "emscripten_memcpy_js": sig("i32 i32 i32"),
    "emscripten_date_now": sig("", F64), "_tzset_js": sig("i32 i32 i32 i32"),
    "_localtime_js": sig("i32 i32 i32"), "_gmtime_js": sig("i32 i32 i32"),
}.items()}}
FORMAT4 = {**_WASI32, **{("env", k): v for k, v in {
    **_SYS32, "__asyncjs__weavedrive_open": sig("i32 i32", I32), "__asyncjs__weavedrive_read": sig("i32 i32 i32", I32),
    "__asyncjs__weavedrive_close": sig("i32", I32), "metering_gasUsed": sig("", I32), "_abort_js": sig(""), "_emscripten_system": sig("i32", I32), "_emscripten_memcpy_js": sig("i32 i32 i32"),
    "emscripten_date_now": sig("", F64), "_tzset_js": sig("i32 i32 i32 i32"),
    "_localtime_js": sig("i32 i32 i32"), "_gmtime_js": sig("i32 i32 i32"),
}.items()}}
# ao-ABI §3.3: wasm64 formats.
FORMAT64 = {
    (WASI, "fd_write"): sig("i32 i64 i64 i64", I32), (WASI, "fd_read"): sig("i32 i64 i64 i64", I32),
    (WASI, "fd_close"): sig("i32", I32), (WASI, "fd_seek"): sig("i32 i64 i32 i64", I32),
    (WASI, "fd_sync"): sig("i32", I32), (WASI, "fd_fdstat_get"): sig("i32 i64", I32),
    (WASI, "environ_get"): sig("i64 i64", I32), (WASI, "environ_sizes_get"): sig("i64 i64", I32),
    **{("env", k): v for k, v in {
        "invoke_vjj": sig("i64 i64 i64"), "_emscripten_throw_longjmp": sig(""), "_abort_js": sig(""),
        "exit": sig("i32"), "_emscripten_system": sig("i64", I32), "_emscripten_memcpy_js": sig("i64 i64 i64"),
        "emscripten_resize_heap": sig("i64", I32), "emscripten_get_heap_max": sig("", I64),
        "emscripten_date_now": sig("", F64), "emscripten_get_now": sig("", F64),
        "_emscripten_get_now_is_monotonic": sig("", I32), "_tzset_js": sig("i64 i64 i64 i64"),
        "_localtime_js": sig("i64 i64"), "_gmtime_js": sig("i64 i64"), "_mktime_js": sig("i64", I64),
        "strftime": sig("i64 i64 i64 i64", I64),
        "__syscall_openat": sig("i32 i64 i32 i64", I32), "__syscall_fcntl64": sig("i32 i32 i64", I32),
        "__syscall_ioctl": sig("i32 i32 i64", I32), "__syscall_dup3": sig("i32 i32 i32", I32),
        "__syscall_unlinkat": sig("i32 i64 i32", I32), "__syscall_rmdir": sig("i64", I32),
        "__syscall_renameat": sig("i32 i64 i32 i64", I32), "__syscall_readlinkat": sig("i32 i64 i64 i64", I32),
        "__syscall_stat64": sig("i64 i64", I32), "__syscall_lstat64": sig("i64 i64", I32),
        "__syscall_fstat64": sig("i32 i64", I32),
        "__asyncjs__weavedrive_open": sig("i64 i64", I32), "__asyncjs__weavedrive_read": sig("i32 i64 i64", I32),
        "__asyncjs__weavedrive_close": sig("i32", I32), "metering_gasUsed": sig("", I32),
    }.items()},
}
# ao-ABI §3.1: format 1 = the format-2 functions under minified names a.<letter>.
FORMAT1 = {("a", letter): next(v for (_, n), v in FORMAT2.items() if n == name)
           for name, letter in FORMAT1_IMPORTS.items()}
ALLOWED = {
    "wasm32-unknown-emscripten": FORMAT1,
    "wasm32-unknown-emscripten2": FORMAT2,
    "wasm32-unknown-emscripten3": FORMAT3,
    "wasm32-unknown-emscripten4": FORMAT4,
    "wasm32-unknown-emscripten-metering": FORMAT4,
    "wasm64-unknown-emscripten-draft_2024_02_15": FORMAT64,
    "wasm64-unknown-emscripten-draft_2024_10_16-metering": FORMAT64,
}

ENV = {"Process": {"Id": "PROCESS-ID", "Owner": "OWNER", "Tags": []},
       "Module": {"Id": "MODULE-ID", "Owner": "MOD-OWNER", "Tags": []}}


def message(action: str, data: str = "", nonce: int = 1) -> dict:
    return {"Id": f"MSG-{nonce}", "Data": data, "Owner": "OWNER", "Target": "PROCESS-ID", "From": "FROM-ADDR",
            "Tags": [{"name": "Action", "value": action}], "Nonce": nonce, "Timestamp": 1730000000123,
            "Block-Height": 1543210, "Cron": False, "Read-Only": False}


def _available() -> list[str]:
    return list(recipes.MODULES)


@pytest.fixture(scope="module", params=_available())
def built(request) -> tuple[recipes.ModuleInfo, Path]:
    if shutil.which("emcc") is None:
        pytest.fail("emcc missing: scripts/install.sh installs Debian's emscripten for the tests")
    return recipes.MODULES[request.param], recipes.build(request.param)


def objdump(path: Path) -> str:
    return subprocess.run(["wasm-objdump", "-d", str(path)], check=True,
                          capture_output=True, text=True).stdout


def mnemonics(path: Path) -> set[str]:
    ops = set()
    for line in objdump(path).splitlines():
        if " | " in line:
            text = line.split(" | ", 1)[1].strip()
            if text:
                ops.add(text.split()[0])
    return ops


def test_build_is_cached(built):
    info, path = built
    assert path.is_file() and path.stat().st_size > 100_000
    assert path.read_bytes()[:4] == b"\0asm"
    assert recipes.build(info.name) == path  # second call is a cache hit on the same key
    assert info.name in path.name and recipes.cache_key(info) in path.name


def test_imports_match_module_format(built):
    info, path = built
    w = parse(path.read_bytes())
    allowed = ALLOWED[info.module_format]
    unknown = {k: v for k, v in w.func_imports.items() if k not in allowed}
    assert not unknown, f"imports not in ao-ABI §3 for {info.module_format}: {unknown}"
    wrong = {k: (v, allowed[k]) for k, v in w.func_imports.items() if allowed[k] != v}
    assert not wrong, f"signature differs from ao-ABI §3: {wrong}"
    assert not w.other_imports  # memory and table are defined and exported, as in real modules
    letters = {v: k for k, v in FORMAT1_IMPORTS.items()}
    names = {letters[n] if info.minify_format1 else n for _, n in w.func_imports}
    if info.exceptions == "js-sjlj":
        assert "_emscripten_throw_longjmp" in names
        assert ("invoke_vjj" if info.memory64 else "invoke_vii") in names
        assert not w.tags
    else:
        assert not any(n.startswith("invoke_") for n in names)
        assert "_emscripten_throw_longjmp" not in names
        assert [w.types[t] for t in w.tags] == [(("i64",), ())]  # like aos-2-pure-xs: one (i64)->() tag
    assert "system" in names or "_emscripten_system" in names


def test_exports_match_module_format(built):
    info, path = built
    w = parse(path.read_bytes())
    p = I64 if info.memory64 else I32

    def esig(name: str):
        return w.export_sig(export_name(info, name))

    assert w.exports[export_name(info, "memory")][0] == "memory"
    assert len(w.memories) == 1 and w.memories[0][0] is info.memory64
    assert w.memories[0][2] is not None  # declared maximum
    assert w.exports[export_name(info, "__indirect_function_table")][0] == "table"
    assert w.tables[0][:2] == ("funcref", False)  # 32-bit funcref table even for memory64
    assert esig("handle") == ((p, p), (p,))
    assert esig("malloc") == ((p,), (p,))
    assert esig("__wasm_call_ctors") == ((), ())
    if info.minify_format1:
        assert sorted(w.exports) == sorted(FORMAT1_EXPORTS.values())  # exactly E..O, like the fixtures
        assert w.memories[0][2] == 8000
    else:
        assert esig("free") == ((p,), ())
        assert esig("emscripten_stack_init") == ((), ())
        assert esig("emscripten_stack_get_end") == ((), (p,))
        assert esig("emscripten_stack_get_current") == ((), (p,))
    if info.compat <= 2:
        assert esig("stackSave") == ((), (p,))
        assert esig("stackRestore") == ((p,), ())
        assert esig("stackAlloc") == ((p,), (p,))
    else:
        assert esig("_emscripten_stack_alloc") == ((p,), (p,))
        assert esig("_emscripten_stack_restore") == ((p,), ())
    if info.exceptions == "js-sjlj":
        assert esig("setThrew") == ((p, I32), ())
    if info.boot == "main":
        assert esig("main")[1] == (I32,)


def test_opcodes(built):
    info, path = built
    ops = mnemonics(path)
    legacy_eh = {"try", "catch", "catch_all", "delegate", "rethrow"}
    if info.exceptions == "wasm-legacy-eh":
        assert {"try", "catch", "throw"} <= ops
        assert "try_table" not in ops
    else:
        assert not ops & (legacy_eh | {"throw", "try_table", "throw_ref"})
        # MVP + sign-ext only: the -metering rewrite understands these
        fc_or_simd = {o for o in ops if "trunc_sat" in o or o.startswith(("memory.copy", "memory.fill",
                      "memory.init", "data.drop", "table.", "v128", "i8x16", "i16x8", "i32x4", "i64x2",
                      "f32x4", "f64x2"))}
        assert not fc_or_simd
        flags = ["--disable-bulk-memory", "--disable-saturating-float-to-int", "--disable-simd",
                 "--disable-reference-types", "--disable-multi-value"]
        if info.memory64:
            flags.append("--enable-memory64")
        subprocess.run(["wasm-validate", *flags, str(path)], check=True)


def _host(info: recipes.ModuleInfo, path: Path, weavedrive: dict[str, bytes] | None = None) -> PyHost:
    wasm = path.read_bytes()
    if info.exceptions == "wasm-legacy-eh":
        if not WASM_OPT.exists():
            pytest.fail(f"binaryen oracle missing at {WASM_OPT} (npm peers: scripts/install.sh)")
        out = subprocess.run([str(WASM_OPT), "--translate-to-exnref", "--enable-exception-handling",
                              "--enable-memory64", "--enable-reference-types", "--enable-sign-ext",
                              "--enable-mutable-globals", "--enable-bulk-memory", "--enable-nontrapping-float-to-int",
                              str(path), "-o", "-"], check=True, capture_output=True).stdout
        wasm = out
    return PyHost(wasm, memory64=info.memory64, boot=info.boot, minified=info.minify_format1,
                  compat=info.compat, exceptions=info.exceptions == "wasm-legacy-eh", weavedrive=weavedrive)


def test_runs_under_wasmtime_py(built):
    info, path = built
    host = _host(info, path)
    r = host.handle(message("Echo", "hello ✓", 1), ENV)
    assert r == {"ok": True, "response": {"Output": "hello ✓", "Messages": [], "Spawns": [], "Assignments": []}}
    assert host.handle(message("Count", nonce=2), ENV)["response"]["Output"] == 1
    assert host.handle(message("Count", nonce=3), ENV)["response"]["Output"] == 2
    r = host.handle(message("Eval", "x = 20; print('p'); return x * 2 + 2", 4), ENV)
    assert r["response"]["Output"] == {"data": "p\n42", "prompt": "aocu> ", "print": True}
    assert host.handle(message("Eval", "return x", 5), ENV)["response"]["Output"]["data"] == "20"
    # floats through strtod/printf (wasm64: exercises the binary128 compare shim in compat.c)
    r = host.handle(message("Eval", "return string.format('%.3f', tonumber('2.25') * 1.5e0)", 5), ENV)
    assert r["response"]["Output"]["data"] == "3.375"
    # a Lua error inside Eval unwinds through longjmp (invoke_* or wasm EH) and is reported
    r = host.handle(message("Eval", "error('boom')", 6), ENV)
    assert r == {"ok": True, "response": {"Error": '[string "aos"]:1: boom'}}
    # 40 nested protected calls, each catching and re-raising (nested invoke_* / nested try)
    code = ("local n = 0; local function g(d) if d == 0 then error('deep') end "
            "local ok, e = pcall(g, d - 1); n = n + 1; error(e, 0) end; "
            "local ok, e = pcall(g, 40); return n .. ' ' .. e")
    r = host.handle(message("Eval", code, 6), ENV)
    assert r["response"]["Output"]["data"] == '40 [string "aos"]:1: deep'
    r = host.handle(message("Eval", "local function f() return f() + 1 end return f()", 6), ENV)
    assert "stack overflow" in r["response"]["Error"]
    r = host.handle(message("Fail", "now", 7), ENV)
    assert r["ok"] is False and "Fail requested: now" in r["response"]
    r = host.handle(message("Exec", "echo hi > /tmp/x", 8), ENV)["response"]["Output"]
    assert r == {"ok": False, "error": "Function not implemented", "code": 52}
    r = host.handle(message("Time", nonce=9), ENV)["response"]["Output"]
    assert r["time"] == 1730000000123 and r["date"] == "2024-10-27T03:33:20" and r["mktime"] == 1704067200
    r1 = host.handle(message("Random", nonce=10), ENV)["response"]["Output"]
    r2 = host.handle(message("Random", nonce=11), ENV)["response"]["Output"]
    assert len(r1["values"]) == 3 and r1["values"] != r2["values"]  # seed depends on the message Id
    assert host.handle(message("Count", nonce=12), ENV)["response"]["Output"] == 3  # state kept in memory


def test_send_shape(built):
    info, path = built
    host = _host(info, path)
    r = host.handle(message("Send", "payload", 1), ENV)["response"]
    assert r["Output"]["data"] == "sent 1"
    [m] = r["Messages"]
    assert m["Target"] == "FROM-ADDR" and m["Data"] == "payload" and m["Anchor"] == "0" * 31 + "1"
    assert {"name": "Type", "value": "Message"} in m["Tags"]
    [s] = r["Spawns"]
    assert {"name": "From-Process", "value": "PROCESS-ID"} in s["Tags"] and s["Data"] == "NODATA"
    assert r["Assignments"] == [{"Processes": ["FROM-ADDR"], "Message": "MSG-1"}]


def test_grow_and_loop(built):
    info, path = built
    host = _host(info, path)
    before = host.memory.data_len(host.store)
    r = host.handle(message("Grow", "24", 1), ENV)["response"]["Output"]
    assert r["held_mib"] == 24
    assert host.memory.data_len(host.store) > before + 24 * 2**20
    host.fuel = 50_000_000
    with pytest.raises(Exception, match="fuel"):
        host.handle(message("Loop", nonce=2), ENV)


def test_weavedrive_load(built):
    info, path = built
    blob = bytes(range(256)) * 700  # 179200 bytes: several 64 KiB reads, last one short
    host = _host(info, path, weavedrive={"/data/TXID": blob})
    names = {n for _, n in parse(path.read_bytes()).func_imports}
    r = host.handle(message("Load", "/data/TXID", 1), ENV)["response"]["Output"]
    if info.compat < 4:  # formats 1-3 have no WeaveDrive imports
        assert "__asyncjs__weavedrive_open" not in names
        assert r == {"ok": False, "error": "weavedrive: not in this module format"}
        return
    assert {"__asyncjs__weavedrive_open", "__asyncjs__weavedrive_read", "__asyncjs__weavedrive_close",
            "metering_gasUsed"} <= names
    assert r == {"ok": True, "size": len(blob), "sum": sum(blob), "head": blob[:16].hex()}
    r = host.handle(message("Load", "/data/OTHER", 2), ENV)["response"]["Output"]
    assert r == {"ok": False, "error": "weavedrive: cannot open /data/OTHER"}
    assert host.handle(message("Info", nonce=3), ENV)["response"]["Output"]["gas_used"] == 0


def test_bad_json_returns_empty_string(built):
    info, path = built
    host = _host(info, path)
    assert host.handle_raw('{"Tags": [', json.dumps(ENV)) == ""


def test_missing_emcc_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(recipes.shutil, "which", lambda _name: None)
    with pytest.raises(recipes.BuildError, match="emcc not found"):
        recipes.emcc_path()


def test_unknown_module_name():
    with pytest.raises(recipes.BuildError, match="unknown test module"):
        recipes.build("nope")


def test_cli_prints_format_and_path(capsys):
    assert recipes.main(["lua32"]) == 0
    name, fmt, path = capsys.readouterr().out.strip().split("\t")
    assert (name, fmt) == ("lua32", "wasm32-unknown-emscripten2") and Path(path) == recipes.build("lua32")
    assert recipes.main(["no-such-module"]) == 1
    assert "unknown test module" in capsys.readouterr().err
