"""Renders tests/wat/process.wat.in for one format family and compiles it with wasmtime's WAT parser.

Commands understood by the module's handle (first byte of the message):
  c counter+1 (also bumps an exported mutable global)   G read that global     E ok:true + Error
  f ok:false    t trap    l infinite loop    b bad JSON    u unterminated string    n NULL result
  g memory bomb via emscripten_resize_heap    j longjmp through invoke_*    x system()
  a abort    v environ sizes    i init flags    d gmtime+strftime    m metering.usegas(5000)
  F fill 8 MiB at 1 MiB with a pattern (benchmarks)
  r /dev/urandom (formats 2+)    w MEMFS write/read (formats 2+)    anything else: echo
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import wasmtime

HERE = Path(__file__).resolve().parent

FORMAT_OF = {
    "f1": "wasm32-unknown-emscripten",
    "f2": "wasm32-unknown-emscripten2",
    "f3": "wasm32-unknown-emscripten3",
    "f4": "wasm32-unknown-emscripten4",
    "w64": "wasm64-unknown-emscripten-draft_2024_02_15",
}

F1_LETTERS = {
    "_emscripten_throw_longjmp": "p", "emscripten_resize_heap": "q", "invoke_vii": "x", "system": "m",
    "abort": "D", "environ_sizes_get": "v", "strftime": "n", "_gmtime_js": "B",
}

STRINGS = [
    ("OKPRE", b'{"ok":true,"response":{"Output":"'),
    ("OKSUF", b'","Messages":{},"Spawns":[]}}'),
    ("ERR", b'{"ok":true,"response":{"Error":"bad thing"}}'),
    ("FALSE", b'{"ok":false,"response":"boom"}'),
    ("BAD", b"not json{"),
    ("OOM", b'{"ok":false,"response":"not enough memory"}'),
    ("URANDOM", b"/dev/urandom\0"),
    ("TMPF", b"/tmp/f\0"),
    ("HELLO", b"hello"),
    ("FMT", b"%Y-%m-%d %H:%M:%S %a %j %Z\0"),
    ("ECHO", b"echo hi\0"),
    ("HEX", b"0123456789abcdef"),
    ("SLASH", b"/"),
]


def _wat_bytes(b: bytes) -> str:
    return "".join(f"\\{c:02x}" for c in b)


def render(fam: str, metered: bool = False, initial_pages: int = 2) -> str:
    w64 = fam == "w64"
    P = "i64" if w64 else "i32"
    subs: dict[str, str] = {"P": P}
    off = 12288
    data = []
    for name, b in STRINGS:
        subs[f"S_{name}"] = str(off)
        subs[f"L_{name}"] = str(len(b))
        data.append(f'(data (i32.const {off}) "{_wat_bytes(b)}")' if not w64 else f'(data (i64.const {off}) "{_wat_bytes(b)}")')
        off += len(b) + 8
    subs["DATA"] = "\n  ".join(data)
    subs["MEMTYPE"] = "i64" if w64 else ""
    subs["MEM_INITIAL"] = str(initial_pages)
    subs["MEM_MAX"] = str(max(4096, initial_pages))
    subs["PTR_BODY"] = "(i64.extend_i32_u (local.get $a))" if w64 else "(local.get $a)"
    subs["UNPTR_BODY"] = "(i32.wrap_i64 (local.get $a))" if w64 else "(local.get $a)"
    subs["MEMSIZE_I32"] = "(i32.wrap_i64 (memory.size))" if w64 else "(memory.size)"

    def imp(fid: str, name: str, params: str, results: str, ns: str = "env") -> str:
        if fam == "f1" and ns != "metering":
            ns, name = "a", F1_LETTERS[name]
        r = f" (result {results})" if results else ""
        p = f" (param {params})" if params else ""
        return f'(import "{ns}" "{name}" (func ${fid}{p}{r}))'

    wasi = "wasi_snapshot_preview1"
    imports = [
        imp("longjmp", "_emscripten_throw_longjmp", "", ""),
        imp("resize_heap", "emscripten_resize_heap", P, "i32"),
        imp("invoke", "invoke_vjj" if w64 else "invoke_vii", f"{P} {P} {P}", ""),
        imp("system", "system" if fam in ("f1", "f2") else "_emscripten_system", P, "i32"),
        imp("abort", "abort" if fam in ("f1", "f2", "f3") else "_abort_js", "", ""),
        imp("environ_sizes_get", "environ_sizes_get", f"{P} {P}", "i32", wasi),
        imp("strftime", "strftime", f"{P} {P} {P} {P}", P),
    ]
    if fam in ("f1", "f2"):
        imports.append(imp("gmtime", "_gmtime_js", "i32 i32", ""))
        subs["GMTIME_CALL"] = ("(call $st32 (i32.const 1110) (i32.const 1730000000))"
                               "(call $gmtime (i32.const 1110) (i32.const 1200))")
    elif fam in ("f3", "f4"):
        imports.append(imp("gmtime", "_gmtime_js", "i32 i32 i32", ""))
        subs["GMTIME_CALL"] = "(call $gmtime (i32.const 1730000000) (i32.const 0) (i32.const 1200))"
    else:
        imports.append(imp("gmtime", "_gmtime_js", "i64 i64", ""))
        subs["GMTIME_CALL"] = "(call $gmtime (i64.const 1730000000) (i64.const 1200))"
    if metered:
        imports.append(imp("usegas", "usegas", P, "", "metering"))
        subs["USEGAS_CALL"] = f"(call $usegas ({P}.const 5000))"
    else:
        subs["USEGAS_CALL"] = ""
    if fam != "f1":
        imports += [
            imp("openat", "__syscall_openat", f"i32 {P} i32 {P}", "i32"),
            imp("fd_read", "fd_read", f"i32 {P} {P} {P}", "i32", wasi),
            imp("fd_write", "fd_write", f"i32 {P} {P} {P}", "i32", wasi),
            imp("fd_close", "fd_close", "i32", "i32", wasi),
        ]

        def iov(base: int, length: int) -> str:
            if w64:
                return (f"(i64.store (i64.const 1100) (i64.const {base})) "
                        f"(i64.store (i64.const 1108) (i64.const {length}))")
            return f"(call $st32 (i32.const 1100) (i32.const {base})) (call $st32 (i32.const 1104) (i32.const {length}))"

        subs["FS_CMDS"] = f"""
    (if (i32.eq (local.get $c) (i32.const 114)) (then
      (local.set $fd (call $openat (i32.const -100) (call $ptr (i32.const {subs['S_URANDOM']})) (i32.const 0) ({P}.const 0)))
      {iov(1400, 8)}
      (drop (call $fd_read (local.get $fd) (call $ptr (i32.const 1100)) ({P}.const 1) (call $ptr (i32.const 1120))))
      (drop (call $fd_close (local.get $fd)))
      (call $ok_begin) (call $emit_hex (i32.const 1400) (i32.const 8))
      (return (call $ok_end))))
    (if (i32.eq (local.get $c) (i32.const 119)) (then
      (local.set $fd (call $openat (i32.const -100) (call $ptr (i32.const {subs['S_TMPF']})) (i32.const 577) ({P}.const 0)))
      {iov(int(subs['S_HELLO']), 5)}
      (drop (call $fd_write (local.get $fd) (call $ptr (i32.const 1100)) ({P}.const 1) (call $ptr (i32.const 1120))))
      (drop (call $fd_close (local.get $fd)))
      (local.set $fd (call $openat (i32.const -100) (call $ptr (i32.const {subs['S_TMPF']})) (i32.const 0) ({P}.const 0)))
      {iov(1400, 16)}
      (drop (call $fd_read (local.get $fd) (call $ptr (i32.const 1100)) ({P}.const 1) (call $ptr (i32.const 1120))))
      (drop (call $fd_close (local.get $fd)))
      (call $ok_begin) (call $emit (i32.const 1400) (call $ld32 (i32.const 1120)))
      (return (call $ok_end))))"""
    else:
        subs["FS_CMDS"] = ""
    subs["IMPORTS"] = "\n  ".join(imports)

    if fam == "f1":
        names = {"memory": "E", "ctors": "F", "handle": "G", "main": "H", "table": "I", "setThrew": "L",
                 "save": "M", "restore": "N", "alloc": "O"}
    elif fam in ("f2", "f3"):
        names = {"memory": "memory", "ctors": "__wasm_call_ctors", "handle": "handle", "main": "main",
                 "table": "__indirect_function_table", "setThrew": "setThrew", "save": "stackSave",
                 "restore": "stackRestore", "alloc": "stackAlloc"}
    else:
        names = {"memory": "memory", "ctors": "__wasm_call_ctors", "handle": "handle", "main": "main",
                 "table": "__indirect_function_table", "setThrew": "setThrew",
                 "save": "emscripten_stack_get_current", "restore": "_emscripten_stack_restore",
                 "alloc": "_emscripten_stack_alloc", "init": "emscripten_stack_init",
                 "end": "emscripten_stack_get_end"}
    fids = {"ctors": "$ctors", "handle": "$handle", "main": "$main", "setThrew": "$setThrew",
            "save": "$stackSave", "restore": "$stackRestore", "alloc": "$stackAlloc", "init": "$stack_init",
            "end": "$stack_end"}
    exports = [f'(export "{names["memory"]}" (memory $mem))', f'(export "{names["table"]}" (table $tab))',
               '(export "aocu_generation" (global $generation))']
    for k, fid in fids.items():
        if k in names:
            exports.append(f'(export "{names[k]}" (func {fid}))')
    subs["EXPORTS"] = "\n  ".join(exports)

    text = (HERE / "process.wat.in").read_text()
    for k in sorted(subs, key=len, reverse=True):
        text = text.replace("{" + k + "}", subs[k])
    return text


@cache
def build(fam: str, metered: bool = False, initial_pages: int = 2) -> bytes:
    return wasmtime.wat2wasm(render(fam, metered, initial_pages))


if __name__ == "__main__":
    import sys

    print(render(sys.argv[1] if len(sys.argv) > 1 else "f4"))
