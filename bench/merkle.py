"""Page-Merkle commitment after a one-page change on 64 MiB, vs a full rehash measured in the same run.

Target (issue 2): incremental commitment < 1 ms. Run: python bench/merkle.py
"""

from __future__ import annotations

import mmap
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cu._native import merkle  # noqa: E402

SIZE = 64 << 20
PAGE = merkle.PAGE_SIZE


def bench(method: str, rounds: int = 50) -> tuple[float, str]:
    buf = mmap.mmap(-1, SIZE)
    buf[:] = bytes(range(256)) * (SIZE // 256)
    m = merkle.PageMerkle(method)
    m.commit(buf)
    times = []
    for i in range(rounds):
        off = ((i * 7919) % (SIZE // PAGE)) * PAGE + i
        buf[off] = (buf[off] + 1) & 0xFF
        t = time.perf_counter()
        m.commit(buf)
        times.append(time.perf_counter() - t)
        assert m.last_rehashed == 1
    assert m.root == merkle.PageMerkle.full_root(buf)
    return statistics.median(times), m.method


def bench_wasmtime(rounds: int = 50) -> tuple[float, str]:
    """The real case: live wasmtime linear memory (64 MiB), one page written by wasm code per round."""
    import ctypes

    import wasmtime

    wat = """(module (memory (export "mem") 1024 1024)
      (func (export "poke") (param i32 i32) (i32.store8 (local.get 0) (local.get 1))))"""
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    inst = wasmtime.Instance(store, wasmtime.Module(engine, wat), [])
    mem, poke = inst.exports(store)["mem"], inst.exports(store)["poke"]
    n = mem.data_len(store)
    view = memoryview((ctypes.c_ubyte * n).from_address(ctypes.addressof(mem.data_ptr(store).contents)))
    for i in range(0, n, 4096):
        poke(store, i, 1)
    m = merkle.PageMerkle()
    m.commit(view)
    times = []
    for i in range(rounds):
        poke(store, ((i * 7919) % (n // PAGE)) * PAGE + i, i + 2)
        t = time.perf_counter()
        m.commit(view)
        times.append(time.perf_counter() - t)
        assert m.last_rehashed == 1
    assert m.root == merkle.PageMerkle.full_root(view)
    return statistics.median(times), m.method


def main() -> None:
    buf = mmap.mmap(-1, SIZE)
    buf[:] = bytes(range(256)) * (SIZE // 256)
    full = []
    for _ in range(3):
        t = time.perf_counter()
        merkle.PageMerkle.full_root(buf)
        full.append(time.perf_counter() - t)
    full_s = statistics.median(full)
    print(f"full rehash of 64 MiB: {full_s * 1e3:.2f} ms")
    runs = [("mmap", *bench("auto")), ("wasmtime memory", *bench_wasmtime()),
            ("mmap, forced fallback", *bench("shadow"))]
    for where, inc, used in runs:
        print(f"one-page change, {where}, method={used}: {inc * 1e6:.1f} us (median), "
              f"{full_s / inc:.0f}x faster than full rehash; target < 1000 us: {'OK' if inc < 1e-3 else 'MISSED'}")


if __name__ == "__main__":
    main()
