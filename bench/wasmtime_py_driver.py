"""Baseline for bench/engine.py: the same AO module driven by wasmtime-py from Python, the way a Python CU
would do it without a native core (docs/ABI.md flow: Instance lifecycle, Calling handle; host imports as Python callables).

Only imports on the path of ordinary messages are implemented for real; any other import raises when
called, so a benchmark that strays off that path fails loudly instead of measuring a stub.
"""

from __future__ import annotations

import json
import time

import wasmtime


class _LongJmp(Exception):
    pass


def make_engine(**overrides) -> wasmtime.Engine:
    # same determinism/limit configuration as cu.engine (fuel, epochs, NaN canonicalisation, memory64, EH);
    # `overrides`: wasmtime.Config attributes to change (bench/engine.py measures config variants this way)
    c = wasmtime.Config()
    c.consume_fuel = True
    c.epoch_interruption = True
    c.cranelift_nan_canonicalization = True
    c.wasm_threads = False
    c.wasm_relaxed_simd_deterministic = True
    c.wasm_memory64 = True
    c.wasm_exceptions = True
    for k, v in overrides.items():
        setattr(c, k, v)
    return wasmtime.Engine(c)


class PyDriver:
    def __init__(self, engine: wasmtime.Engine, wasm: bytes, *, wasm64: bool, fuel: bool = True,
                 epoch: bool = True) -> None:
        self.store = wasmtime.Store(engine)
        self.fuel = fuel  # False for an engine made with consume_fuel=False
        if epoch:
            self.store.set_epoch_deadline(1 << 40)
        if fuel:
            self.store.set_fuel(1 << 62)
        self.module = wasmtime.Module(engine, wasm)
        self.w64 = wasm64
        self.clock = 10000.0
        linker = wasmtime.Linker(engine)
        for imp in self.module.imports:
            fn = self._host(imp.name)
            linker.define(self.store, imp.module, imp.name, wasmtime.Func(self.store, imp.type, fn))
        self.inst = linker.instantiate(self.store, self.module)
        ex = self.inst.exports(self.store)
        self.mem: wasmtime.Memory = ex["memory"]
        self.table: wasmtime.Table = ex["__indirect_function_table"]
        self.f_handle = ex["handle"]
        self.stack_save = ex["emscripten_stack_get_current"]
        self.stack_restore = ex["_emscripten_stack_restore"]
        self.stack_alloc = ex["_emscripten_stack_alloc"]
        self.set_threw = ex["setThrew"]
        ex["emscripten_stack_init"](self.store)
        end = ex["emscripten_stack_get_end"](self.store) or 4
        self.mem.write(self.store, (0x02135467).to_bytes(4, "little") + (0x89BACDFE).to_bytes(4, "little"), end)
        self.mem.write(self.store, (0x63736D65).to_bytes(4, "little"), 0)
        ex["__wasm_call_ctors"](self.store)
        self.last_handle_ns = 0

    # -- host imports ------------------------------------------------------------------------------------
    def _host(self, name: str):  # noqa: C901 - one table of small closures
        s = self

        def u(v: int) -> int:
            return v & 0xFFFFFFFFFFFFFFFF if s.w64 else v & 0xFFFFFFFF

        def fd_write(fd, iovs, n, nwritten):
            w = 16 if s.w64 else 8
            raw = s.mem.read(s.store, u(iovs), u(iovs) + n * w)
            half = w // 2
            total = sum(int.from_bytes(raw[k * w + half:(k + 1) * w], "little") for k in range(n))
            s.mem.write(s.store, total.to_bytes(half, "little"), u(nwritten))
            return 0

        def invoke(idx, *args):
            sp = s.stack_save(s.store)
            try:
                s.table.get(s.store, u(idx))(s.store, *args)
            except Exception as exc:  # the longjmp arrives wrapped by wasmtime-py
                s.stack_restore(s.store, sp)
                if not _is_longjmp(exc):
                    raise
                s.set_threw(s.store, 1, 0)

        def throw_longjmp():
            raise _LongJmp()

        def resize_heap(req):
            old = s.mem.data_len(s.store)
            heap_max = 17179869184 if s.w64 else 4294901760
            req = u(req)
            if req > heap_max:
                return 0
            for cut in (1, 2, 4):
                over = min(old * (1 + 0.2 / cut), req + 100663296)
                new = min(heap_max, -(-max(req, over) // 65536) * 65536)
                try:
                    s.mem.grow(s.store, int((new - old + 65535) // 65536))
                    return 1
                except wasmtime.WasmtimeError:
                    continue
            return 0

        def memcpy(dst, src, n):
            s.mem.write(s.store, s.mem.read(s.store, u(src), u(src) + u(n)), u(dst))

        def now():
            s.clock += 1
            return s.clock - 1

        def tm_fill(t, tmp):
            g = time.gmtime(t)
            vals = [g.tm_sec, g.tm_min, g.tm_hour, g.tm_mday, g.tm_mon - 1, g.tm_year - 1900, (g.tm_wday + 1) % 7,
                    g.tm_yday - 1, 0]
            s.mem.write(s.store, b"".join(v.to_bytes(4, "little", signed=True) for v in vals), u(tmp))

        def gmtime(*a):
            if len(a) == 3:
                tm_fill(a[0] | (a[1] << 32), a[2])
            else:
                tm_fill(a[0], a[1])

        def not_implemented(*_a):
            raise RuntimeError(f"{name} is not implemented in the wasmtime-py baseline driver")

        table = {
            "fd_write": fd_write,
            "invoke_vii": invoke,
            "invoke_vjj": invoke,
            "_emscripten_throw_longjmp": throw_longjmp,
            "emscripten_resize_heap": resize_heap,
            "_emscripten_memcpy_js": memcpy,
            "emscripten_date_now": now,
            "emscripten_get_now": now,
            "_gmtime_js": gmtime,
            "_localtime_js": gmtime,
            "_tzset_js": lambda *a: None,
            "_emscripten_system": lambda cmd: 0 if cmd == 0 else -52,
            "environ_sizes_get": lambda a, b: (s.mem.write(s.store, bytes(16 if s.w64 else 8), u(a)), 0)[1],
            "environ_get": lambda a, b: 0,
            "__syscall_openat": lambda *a: -44,
            "fd_close": lambda fd: 0,
            "__asyncjs__weavedrive_open": lambda *a: 0,
            "__asyncjs__weavedrive_read": lambda *a: 0,
            "__asyncjs__weavedrive_close": lambda *a: 0,
        }
        return table.get(name, not_implemented)

    # -- one message (docs/ABI.md, Calling handle) -------------------------------------------------------------------------
    def call(self, msg: bytes, env: bytes) -> bytes:
        st = self.store
        if self.fuel:
            st.set_fuel(9_000_000_000_000_000)
        sp = self.stack_save(st)
        pm = self.stack_alloc(st, len(msg) + 1)
        self.mem.write(st, msg + b"\0", pm)
        pe = self.stack_alloc(st, len(env) + 1)
        self.mem.write(st, env + b"\0", pe)
        t0 = time.perf_counter_ns()
        rp = self.f_handle(st, pm, pe)
        self.last_handle_ns = time.perf_counter_ns() - t0
        out = bytearray()
        pos = rp
        while True:  # copy the C string before the next call into the module
            chunk = self.mem.read(st, pos, pos + 256)
            z = chunk.find(b"\0")
            if z >= 0:
                out += chunk[:z]
                break
            out += chunk
            pos += 256
        self.stack_restore(st, sp)
        return bytes(out)

    def handle(self, msg: bytes, env: bytes) -> dict:
        env_obj = json.loads(self.call(msg, env))
        if not env_obj.get("ok"):
            return {"Error": env_obj.get("response"), "GasUsed": 0}
        return env_obj["response"]


def _is_longjmp(exc: BaseException) -> bool:
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, _LongJmp):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return "_LongJmp" in repr(exc)
