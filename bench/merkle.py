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
    for method in ("auto", "shadow"):
        inc, used = bench(method)
        print(f"one-page change, method={used}: {inc * 1e6:.1f} us (median), "
              f"{full_s / inc:.0f}x faster than full rehash; target < 1000 us: {'OK' if inc < 1e-3 else 'MISSED'}")


if __name__ == "__main__":
    main()
