"""Restore of a fully written ~81 MiB Lua process: plain (decompress + write) vs copy-on-write (map the raw page
image), in the same run, with what each costs afterwards (the CoW cost moves to page faults).

Per round and mode: restore; first message (Count); commitment; a full collectgarbage() message (reads the
whole heap, writes mark bits); and, as the worst case for CoW, rewriting the whole heap (Free, then Grow the
same amount again: every page is written, so every page of a CoW restore is copied on its first write).
Target (issue 19): the CoW restore < 5 ms. Wall times (min and median) and process CPU time (median) per step.

Run: python bench/restore.py [--module lua64|lua32] [--mib 81] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cu.engine import Instance, Module, Snapshot  # noqa: E402
from tests.modules.build import MODULES, build  # noqa: E402

ENV = {"Process": {"Id": "P", "Owner": "O", "Tags": []}, "Module": {"Id": "M", "Owner": "O", "Tags": []}}


def msg(action: str, data: str = "") -> dict:
    return {"Id": "MSG", "Owner": "O", "From": "O", "Target": "P", "Tags": [{"name": "Action", "value": action}],
            "Data": data, "Timestamp": 1730000000000, "Block-Height": 1}


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def ok(r: dict) -> dict:
    assert "Error" not in r, r
    return r


def build_process(mod: Module, mib: int) -> tuple[Instance, int]:
    """A process whose memory is ~`mib` MiB, nearly every page written (Lua strings of distinct bytes)."""
    inst = Instance(mod)
    held = 0
    while inst.memory_size < (mib << 20) - (2 << 20):
        ok(inst.handle(msg("Grow", "2"), ENV))
        held += 2
    return inst, held


def steps(restore, mod: Module, held: int) -> dict[str, tuple[float, float]]:
    """(wall s, cpu s) of each step after `restore()`; the instance is dropped outside the timed region."""
    out: dict[str, tuple[float, float]] = {}

    def timed(name, fn):
        c, t = cpu(), time.perf_counter()
        r = fn()
        out[name] = (time.perf_counter() - t, cpu() - c)
        return r

    inst = timed("restore", restore)
    timed("first message", lambda: ok(inst.handle(msg("Count"), ENV)))
    root = timed("commitment", inst.commitment)
    timed("collectgarbage()", lambda: ok(inst.handle(msg("Eval", "collectgarbage() return 1"), ENV)))
    timed("rewrite heap", lambda: (ok(inst.handle(msg("Free"), ENV)), ok(inst.handle(msg("Grow", str(held)), ENV))))
    timed("commitment 2", inst.commitment)
    out["_root"] = root  # type: ignore[assignment]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", default="lua64", choices=sorted(MODULES))
    ap.add_argument("--mib", type=int, default=81)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    cache = Path(tempfile.gettempdir()) / "aocu-bench-restore-cache"
    info = MODULES[args.module]
    mod = Module.load(build(args.module).read_bytes(), info.module_format, cache_dir=cache)
    inst, held = build_process(mod, args.mib)
    snap = inst.snapshot()
    blob = snap.to_bytes()
    mem = inst.memory()
    nonzero = sum(1 for i in range(0, len(mem), 65536) if any(mem[i:i + 65536]))
    print(f"{args.module}: {inst.memory_size / 2**20:.1f} MiB memory, {nonzero * 100 // (len(mem) // 65536)}% of "
          f"64 KiB pages non-zero; snapshot {len(blob) / 2**20:.2f} MiB (zstd); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    del mem

    t = time.perf_counter()
    image = snap.page_image()
    print(f"one-off per snapshot: page image (memfd) built in {(time.perf_counter() - t) * 1e3:.0f} ms", end="")
    path = Path(tempfile.mkdtemp()) / "process.aopi"
    t = time.perf_counter()
    snap.to_file(path)
    print(f", file written in {(time.perf_counter() - t) * 1e3:.0f} ms", end="")
    t = time.perf_counter()
    Snapshot.from_file(path, verify=True)
    print(f", file opened with verify=True in {(time.perf_counter() - t) * 1e3:.0f} ms")
    assert bytes(image.root) == snap.memory_root

    modes = {
        "plain": lambda: Instance.restore(mod, Snapshot.from_bytes(blob)),
        "cow (memfd)": lambda: Instance.restore(mod, snap, cow=True),
        "cow (file)": lambda: Instance.restore(mod, Snapshot.from_file(path, verify=False), cow=True),
    }
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for _ in range(args.rounds):  # interleaved, so load changes hit every mode alike
        for name, fn in modes.items():
            results[name].append(steps(fn, mod, held))
    roots = {r.pop("_root") for rs in results.values() for r in rs}  # type: ignore[misc]
    assert len(roots) == 1, "every mode must reach the same commitment"

    names = list(results["plain"][0])
    print(f"\nmedians of {args.rounds} rounds (wall min / wall median / cpu median, ms):")
    print(f"  {'step':<18}" + "".join(f"{m:>30}" for m in modes))
    med = {m: {s: statistics.median(r[s][0] for r in rs) for s in names} for m, rs in results.items()}
    for s in names:
        cells = []
        for rs in results.values():
            walls = [r[s][0] * 1e3 for r in rs]
            cells.append(f"{min(walls):8.2f} /{statistics.median(walls):8.2f} /"
                         f"{statistics.median(r[s][1] * 1e3 for r in rs):8.2f}")
        print(f"  {s:<18}" + "".join(f"{c:>30}" for c in cells))
    for m in ("cow (memfd)", "cow (file)"):
        r, p = med[m]["restore"], med["plain"]["restore"]
        upto_msg = med[m]["restore"] + med[m]["first message"] + med[m]["commitment"]
        p_msg = med["plain"]["restore"] + med["plain"]["first message"] + med["plain"]["commitment"]
        best = min(x["restore"][0] for x in results[m]) * 1e3
        print(f"{m}: restore {r * 1e3:.2f} ms (min {best:.2f}) vs plain {p * 1e3:.1f} ms = {p / r:.0f}x "
              f"(target < 5 ms: {'PASS' if best < 5 else 'FAIL'}); restore + first message + commitment "
              f"{upto_msg * 1e3:.1f} ms vs {p_msg * 1e3:.1f} ms = {p_msg / upto_msg:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
