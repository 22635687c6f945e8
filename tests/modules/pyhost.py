"""Minimal wasmtime-py host for the project's test modules (test helper, not the product engine).

It proves the recipes independently of the native engine: it links only the imports these modules
declare (ao-ABI §3.2/§3.3 names, both pointer widths), runs the format's init sequence (§2), and
calls handle() the way the reference loader does (§6: strings on the stack, copy the result).
Deterministic choices: UTC, clocks return 0, empty environment, stdout captured, system() -> ENOSYS.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime

from tests.modules.wasmedit import FORMAT1_EXPORTS, FORMAT1_IMPORTS

ENOSYS = 52
ENOENT = 44
ESPIPE = 70
WASM_PAGE = 65536


class LongJmp(Exception):
    """Raised by _emscripten_throw_longjmp; caught by the enclosing invoke_* (JS-style SJLJ)."""


class GuestAbort(Exception):
    """abort/_abort_js/exit from the guest."""


class HandleError(RuntimeError):
    """handle() returned something that is not the {ok, response} JSON."""


def make_engine(memory64: bool, exceptions: bool) -> wasmtime.Engine:
    cfg = wasmtime.Config()
    cfg.wasm_memory64 = memory64
    if exceptions:
        # wasmtime 50 ties the exceptions proposal (exnref) to its GC support.
        cfg.wasm_reference_types = True
        cfg.wasm_function_references = True
        cfg.wasm_gc = True
        cfg.wasm_exceptions = True
    cfg.consume_fuel = True
    return wasmtime.Engine(cfg)


class PyHost:
    """One instance of a test module. `compat` is the import-name family (2, 3 or 4 as in
    tests/modules/src/compat.c); `boot` is "main" (call main at init) or "lazy" (stack cookie, no main)."""

    def __init__(self, wasm: bytes | Path, *, memory64: bool, compat: int, boot: str, exceptions: bool = False,
                 minified: bool = False, heap_max: int | None = None, fuel: int = 10**12,
                 weavedrive: dict[str, bytes] | None = None) -> None:
        if isinstance(wasm, Path):
            wasm = wasm.read_bytes()
        self.memory64 = memory64
        self.compat = compat
        self.boot = boot
        # format 1: imports a.<letter>, exports <letter> (ao-ABI §3.1)
        self.export_map = dict(FORMAT1_EXPORTS) if minified else {}
        letters = {v: k for k, v in FORMAT1_IMPORTS.items()}
        self.ptr = 8 if memory64 else 4
        self.heap_max = heap_max if heap_max is not None else ((16 << 30) if memory64 else 4294901760)
        self.stdout = bytearray()
        self.weavedrive = weavedrive or {}  # path -> bytes served by the WeaveDrive imports
        self._wd_open: dict[int, list[Any]] = {}
        self.tempret = 0
        self.fuel = fuel
        self.engine = make_engine(memory64, exceptions)
        self.store = wasmtime.Store(self.engine)
        self.store.set_fuel(fuel)
        self.module = wasmtime.Module(self.engine, wasm)
        linker = wasmtime.Linker(self.engine)
        impls = self._imports()
        missing = []
        for imp in self.module.imports:
            if minified:
                fn = impls.get(letters.get(imp.name, "")) if imp.module == "a" else None
            else:
                fn = impls.get(imp.name) if imp.module in ("env", "wasi_snapshot_preview1") else None
            if fn is None or not isinstance(imp.type, wasmtime.FuncType):
                missing.append(f"{imp.module}.{imp.name}")
                continue
            linker.define_func(imp.module, imp.name, imp.type, fn)
        if missing:
            raise RuntimeError(f"module imports functions this host does not implement: {missing}")
        self.instance = linker.instantiate(self.store, self.module)
        ex = self.instance.exports(self.store)
        self.exports = ex
        self.memory: wasmtime.Memory = ex[self._export("memory")]
        self.table: wasmtime.Table = ex[self._export("__indirect_function_table")]
        self._init()

    # -- memory helpers ---------------------------------------------------------------------------
    def read(self, addr: int, n: int) -> bytes:
        return bytes(self.memory.read(self.store, addr, addr + n))

    def write(self, addr: int, data: bytes) -> None:
        self.memory.write(self.store, data, addr)

    def u32(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 4), "little")

    def uptr(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, self.ptr), "little")

    def put_i32(self, addr: int, v: int) -> None:
        self.write(addr, (v & 0xFFFFFFFF).to_bytes(4, "little"))

    def put_ptr(self, addr: int, v: int) -> None:
        self.write(addr, (v & ((1 << (8 * self.ptr)) - 1)).to_bytes(self.ptr, "little"))

    def cstring(self, addr: int, limit: int = 1 << 26) -> bytes:
        size = self.memory.data_len(self.store)
        out = bytearray()
        chunk = 4096
        while addr < size and len(out) < limit:
            buf = self.read(addr, min(chunk, size - addr))
            nul = buf.find(b"\0")
            if nul >= 0:
                out += buf[:nul]
                return bytes(out)
            out += buf
            addr += len(buf)
        raise HandleError("unterminated string returned by the module")

    def _export(self, name: str) -> str:
        return self.export_map.get(name, name)

    def has(self, name: str) -> bool:
        return self.exports.get(self._export(name)) is not None

    def call(self, name: str, *args: Any) -> Any:
        return self.exports[self._export(name)](self.store, *args)

    # -- lifecycle --------------------------------------------------------------------------------
    def _init(self) -> None:
        if self.has("emscripten_stack_init"):  # format 1 exports none of the stack-limit helpers
            self.call("emscripten_stack_init")
        if self.boot == "lazy":
            end = self.call("emscripten_stack_get_end")
            self.put_i32(end, 0x02135467)
            self.put_i32(end + 4, 0x89BACDFE)
            self.put_i32(0, 0x63736D65)
        self.call("__wasm_call_ctors")
        if self.boot == "main":
            rc = self.call("main", 0, 0)
            if rc != 0:
                raise RuntimeError(f"main() returned {rc}: {self.stdout.decode(errors='replace')}")

    def _stack_save(self) -> int:
        return self.call("stackSave" if self.compat <= 2 else "emscripten_stack_get_current")

    def _stack_restore(self, sp: int) -> None:
        self.call("stackRestore" if self.compat <= 2 else "_emscripten_stack_restore", sp)

    def _stack_alloc(self, n: int) -> int:
        return self.call("stackAlloc" if self.compat <= 2 else "_emscripten_stack_alloc", n)

    def handle_raw(self, msg_json: str, env_json: str) -> str:
        sp = self._stack_save()
        try:
            msg_b = msg_json.encode() + b"\0"
            env_b = env_json.encode() + b"\0"
            mp = self._stack_alloc(len(msg_b))
            self.write(mp, msg_b)
            ep = self._stack_alloc(len(env_b))
            self.write(ep, env_b)
            rp = self.call("handle", mp, ep)
            return self.cstring(rp).decode()
        finally:
            self._stack_restore(sp)

    def handle(self, msg: dict, env: dict) -> dict:
        self.store.set_fuel(self.fuel)
        raw = self.handle_raw(json.dumps(msg, separators=(",", ":")), json.dumps(env, separators=(",", ":")))
        try:
            out = json.loads(raw)
        except ValueError as e:
            raise HandleError(f"handle returned invalid JSON: {raw[:200]!r}") from e
        if not isinstance(out, dict) or "ok" not in out:
            raise HandleError(f"handle returned no ok field: {raw[:200]!r}")
        return out

    # -- imports ----------------------------------------------------------------------------------
    def _imports(self) -> dict[str, Callable[..., Any]]:
        p = self.ptr

        def invoke(idx: int, *args: Any) -> None:
            sp = self._stack_save()
            try:
                self.table.get(self.store, idx)(self.store, *args)
            except LongJmp:
                self._stack_restore(sp)
                self.call("setThrew", 1, 0)

        def throw_longjmp() -> None:
            raise LongJmp()

        def abort(*_: Any) -> None:
            raise GuestAbort("abort() called")

        def exit_(code: int) -> None:
            raise GuestAbort(f"exit({code})")

        def set_errno(v: int) -> None:
            self.put_i32(self.call("__errno_location"), v)

        def system_f2(cmd: int) -> int:
            if cmd == 0:
                return 0
            set_errno(ENOSYS)
            return -1

        def system_f4(cmd: int) -> int:
            return 0 if cmd == 0 else -ENOSYS

        def memmove(dst: int, src: int, n: int) -> Any:
            self.write(dst, self.read(src, n))

        def resize_heap(req: int) -> int:
            req &= (1 << (8 * p)) - 1
            old = self.memory.data_len(self.store)
            if req > self.heap_max:
                return 0
            for cut in (1, 2, 4):
                over = min(int(old * (1 + 0.2 / cut)), req + 100663296)
                new = min(self.heap_max, -(-max(req, over) // WASM_PAGE) * WASM_PAGE)
                try:
                    self.memory.grow(self.store, (new - old + WASM_PAGE - 1) // WASM_PAGE)
                    return 1
                except wasmtime.WasmtimeError:
                    continue
            return 0

        def fd_write(fd: int, iovs: int, iovs_len: int, nwritten: int) -> int:
            total = 0
            for i in range(iovs_len):
                base = iovs + i * 2 * p
                ptr = self.uptr(base)
                ln = self.uptr(base + p)
                if fd in (1, 2):
                    self.stdout += self.read(ptr, ln)
                total += ln
            self.put_ptr(nwritten, total)
            return 0

        def enosys(*_: Any) -> int:
            return ENOSYS

        def fd_seek(*_: Any) -> int:
            return ESPIPE

        def env_sizes(count: int, size: int) -> int:
            self.put_ptr(count, 0)
            self.put_ptr(size, 0)
            return 0

        def env_get(*_: Any) -> int:
            return 0

        def neg_enoent(*_: Any) -> int:
            return -ENOENT

        def neg_enosys(*_: Any) -> int:
            return -ENOSYS

        def zero(*_: Any) -> int:
            return 0

        def now() -> float:
            return 0.0

        def tm_read(addr: int) -> list[int]:
            return [int.from_bytes(self.read(addr + 4 * i, 4), "little", signed=True) for i in range(9)]

        def tm_write(addr: int, t: int) -> None:
            g = time.gmtime(t)
            vals = [g.tm_sec, g.tm_min, g.tm_hour, g.tm_mday, g.tm_mon - 1, g.tm_year - 1900,
                    (g.tm_wday + 1) % 7, g.tm_yday - 1, 0]
            for i, v in enumerate(vals):
                self.put_i32(addr + 4 * i, v)
            self.write(addr + (40 if p == 8 else 36), bytes(p))  # tm_gmtoff = 0

        def mktime(tm: int) -> int:
            sec, mi, hour, mday, mon, year = tm_read(tm)[:6]
            # normalise the month, then let day/hour/min/sec overflow arithmetically
            y, m = 1900 + year + mon // 12, mon % 12
            t = calendar.timegm((y, m + 1, 1, 0, 0, 0)) + (mday - 1) * 86400 + hour * 3600 + mi * 60 + sec
            tm_write(tm, t)
            return t

        def gmtime_f2(tptr: int, tm: int) -> None:
            tm_write(tm, int.from_bytes(self.read(tptr, 4), "little", signed=True))

        def gmtime_f4_32(lo: int, hi: int, tm: int) -> None:
            t = (lo & 0xFFFFFFFF) | (hi << 32)
            tm_write(tm, t - (1 << 64) if t >= 1 << 63 else t)

        def gmtime_f4_64(t: int, tm: int) -> None:
            tm_write(tm, t)

        def tzset_f2(tz: int, daylight: int, tzname: int) -> None:
            self.put_ptr(tz, 0)
            self.put_i32(daylight, 0)
            for i, name in enumerate((b"GMT\0", b"GMT\0")):
                buf = self.call("malloc", len(name))
                self.write(buf, name)
                self.put_ptr(tzname + i * p, buf)

        def tzset_f4(tz: int, daylight: int, std: int, dst: int) -> None:
            self.put_ptr(tz, 0)
            self.put_i32(daylight, 0)
            self.write(std, b"GMT\0")
            self.write(dst, b"GMT\0")

        def strftime(s: int, maxsize: int, fmt: int, tm: int) -> int:
            f = self.cstring(fmt).decode(errors="replace")
            v = tm_read(tm)
            st = time.struct_time((v[5] + 1900, v[4] + 1, v[3], v[2], v[1], v[0], (v[6] - 1) % 7, v[7] + 1, 0))
            out = time.strftime(f, st).encode()
            if len(out) + 1 > maxsize:
                return 0
            self.write(s, out + b"\0")
            return len(out)

        def get_tempret() -> int:
            return self.tempret

        def set_tempret(v: int) -> None:
            self.tempret = v

        def wd_open(path: int, mode: int) -> int:
            name = self.cstring(path).decode(errors="replace")
            if name not in self.weavedrive:
                return 0  # no WeaveDrive / not admissible -> NULL FILE
            fd = len(self._wd_open) + 100
            self._wd_open[fd] = [self.weavedrive[name], 0]
            return fd

        def wd_read(fd: int, dst: int, n: int) -> int:
            ent = self._wd_open.get(fd)
            if ent is None:
                return 0
            chunk = ent[0][ent[1]:ent[1] + n]
            self.write(dst, chunk)
            ent[1] += len(chunk)
            return len(chunk)

        def wd_close(fd: int) -> int:
            self._wd_open.pop(fd, None)
            return 0

        impls: dict[str, Callable[..., Any]] = {
            "__asyncjs__weavedrive_open": wd_open, "__asyncjs__weavedrive_read": wd_read,
            "__asyncjs__weavedrive_close": wd_close, "metering_gasUsed": lambda: 0,
            "invoke_vii": invoke, "invoke_vjj": invoke,
            "_emscripten_throw_longjmp": throw_longjmp,
            "abort": abort, "_abort_js": abort, "exit": exit_,
            "system": system_f2, "_emscripten_system": system_f4,
            "emscripten_memcpy_big": memmove, "_emscripten_memcpy_js": memmove, "emscripten_memcpy_js": memmove,
            "emscripten_resize_heap": resize_heap,
            "fd_write": fd_write, "fd_read": enosys, "fd_close": enosys, "fd_seek": fd_seek,
            "environ_sizes_get": env_sizes, "environ_get": env_get,
            "__syscall_openat": neg_enoent, "__syscall_unlinkat": neg_enoent,
            "__syscall_renameat": neg_enoent, "__syscall_rmdir": neg_enoent,
            "__syscall_lstat64": neg_enoent, "__syscall_stat64": neg_enoent,
            "__syscall_fcntl64": zero, "__syscall_ioctl": zero, "__syscall_dup3": neg_enosys,
            "__syscall_readlinkat": neg_enoent,
            "_emscripten_date_now": now, "emscripten_date_now": now, "emscripten_get_now": now,
            "_emscripten_get_now_is_monotonic": lambda: 1,
            "_mktime_js": mktime, "strftime": strftime,
            "getTempRet0": get_tempret, "setTempRet0": set_tempret,
        }
        if self.compat <= 2:
            impls.update({"_tzset_js": tzset_f2, "_localtime_js": gmtime_f2, "_gmtime_js": gmtime_f2})
        else:
            gm = gmtime_f4_64 if self.memory64 else gmtime_f4_32
            impls.update({"_tzset_js": tzset_f4, "_localtime_js": gm, "_gmtime_js": gm})
        return impls
