"""Rename imports/exports of a wasm binary (used to give the format-1 module its minified names).

Only the import and export sections are re-encoded; every other section is copied byte for byte
(function indices do not change, so the name section stays valid).
"""

from __future__ import annotations

from tests.modules.wasminfo import _Reader

# ao-ABI §3.1: format 1 (`wasm32-unknown-emscripten`) import letters in namespace "a", and exports.
FORMAT1_IMPORTS = {
    "_emscripten_date_now": "a", "setTempRet0": "b", "fd_close": "c", "__syscall_fcntl64": "d",
    "__syscall_unlinkat": "e", "fd_write": "f", "__syscall_openat": "g", "getTempRet0": "h",
    "_mktime_js": "i", "_tzset_js": "j", "emscripten_memcpy_big": "k", "exit": "l", "system": "m",
    "strftime": "n", "fd_seek": "o", "_emscripten_throw_longjmp": "p", "emscripten_resize_heap": "q",
    "__syscall_lstat64": "r", "__syscall_renameat": "s", "__syscall_rmdir": "t", "environ_get": "u",
    "environ_sizes_get": "v", "__syscall_dup3": "w", "invoke_vii": "x", "fd_read": "y",
    "__syscall_ioctl": "z", "_emscripten_get_now_is_monotonic": "A", "_gmtime_js": "B",
    "_localtime_js": "C", "abort": "D",
}
FORMAT1_EXPORTS = {
    "memory": "E", "__wasm_call_ctors": "F", "handle": "G", "main": "H", "__indirect_function_table": "I",
    "malloc": "J", "__errno_location": "K", "setThrew": "L", "stackSave": "M", "stackRestore": "N",
    "stackAlloc": "O",
}


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _name(s: str) -> bytes:
    b = s.encode()
    return _uleb(len(b)) + b


def _skip_import_desc(r: _Reader, kind: int) -> None:
    if kind == 0:
        r.uleb()
    elif kind == 1:
        r.valtype()
        r.limits()
    elif kind == 2:
        r.limits()
    elif kind == 3:
        r.valtype()
        r.byte()
    elif kind == 4:
        r.byte()
        r.uleb()
    else:
        raise ValueError(f"unknown import kind {kind}")


def rename(wasm: bytes, imports: dict[tuple[str, str], tuple[str, str]],
           exports: dict[str, str], drop_other_exports: bool) -> bytes:
    """Rename imports ((module, name) -> (module, name)) and exports (name -> name).

    Every import must be in `imports`; exports not in `exports` are dropped if drop_other_exports.
    """
    if wasm[:8] != b"\0asm\x01\0\0\0":
        raise ValueError("not a wasm v1 binary")
    out = bytearray(wasm[:8])
    r = _Reader(wasm, 8)
    while r.pos < len(wasm):
        sid = r.byte()
        size = r.uleb()
        start, end = r.pos, r.pos + size
        body = wasm[start:end]
        if sid == 2:
            s = _Reader(wasm, start, end)
            entries = []
            for _ in range(s.uleb()):
                mod, nm = s.name(), s.name()
                kind = s.byte()
                d0 = s.pos
                _skip_import_desc(s, kind)
                if (mod, nm) not in imports:
                    raise ValueError(f"import {mod}.{nm} has no new name")
                nmod, nnm = imports[(mod, nm)]
                entries.append(_name(nmod) + _name(nnm) + bytes([kind]) + wasm[d0:s.pos])
            body = _uleb(len(entries)) + b"".join(entries)
        elif sid == 7:
            s = _Reader(wasm, start, end)
            entries = []
            for _ in range(s.uleb()):
                nm = s.name()
                kind = s.byte()
                idx = s.uleb()
                if nm in exports:
                    entries.append(_name(exports[nm]) + bytes([kind]) + _uleb(idx))
                elif not drop_other_exports:
                    entries.append(_name(nm) + bytes([kind]) + _uleb(idx))
            body = _uleb(len(entries)) + b"".join(entries)
        out += bytes([sid]) + _uleb(len(body)) + body
        r.pos = end
    return bytes(out)


def minify_format1(wasm: bytes) -> bytes:
    """Give a format-2-shaped emscripten module the minified import/export names of format 1."""
    from tests.modules.wasminfo import parse

    info = parse(wasm)
    imports = {}
    for mod, nm in info.func_imports:
        if nm not in FORMAT1_IMPORTS:
            raise ValueError(f"import {mod}.{nm} is not one of the 30 format-1 imports (ao-ABI §3.1)")
        imports[(mod, nm)] = ("a", FORMAT1_IMPORTS[nm])
    missing = [n for n in FORMAT1_EXPORTS if n not in info.exports]
    if missing:
        raise ValueError(f"module lacks format-1 exports {missing}")
    return rename(wasm, imports, FORMAT1_EXPORTS, drop_other_exports=True)
