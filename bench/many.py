"""Many processes on one node: spawn N processes of the project's Lua module, one message each, then a second
round of one message each.

    python bench/many.py [--processes 10000] [--max-warm 64] [--lifecycle fast|classic]

An embedded node (evaluator in this process, as tests/lua_process.py builds it; SQLite store) in a fresh
data dir. Round 1: for each process, its Type=Process item is ingested, then a `Count` message, whose result
is read (the read loads the process: instantiation or its module's init image, the spawn message, the
message). Round 2: one more `Count` each, in the same order, so with N above `--max-warm` every message goes
to an evicted process (restored from its checkpoint, or from the recently evicted states kept in memory).
Reported per round: ingest and result-read latency p50/p99, wall time, the node's RSS (VmRSS and the peak,
VmHWM) and disk (the data dir, after the background checkpoints of the round are written), the CPU time of the
node's process, and the restores in the round. Signing is ed25519 (an RSA-4096 process owner would spend the time
on signatures).

The crank is due `--crank-delay` (30 s) after each acknowledgement; by then a read has evaluated the message and
the process is usually evicted, so the crank should find nothing to do and restore nothing. After round 2 the
bench waits for the crank's due turns and reports every restore per message. `--restore-idle` makes the crank
restore each process it is told about, as it did before it looked at the store first (the baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).absolute().parent.parent
sys.path.insert(0, str(REPO))

from cu.codec.ans104 import DataItem  # noqa: E402
from cu.codec.wallet import Ed25519Key  # noqa: E402
from tests.lua_process import embedded_node, spawn, upload_lua32  # noqa: E402


def status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of this process in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            out[k] = int(v.split()[0]) * 1024
    return out


def rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes."""
    st = status()
    return st["VmRSS"], st["VmHWM"]


def cpu() -> float:
    """CPU seconds of this process (every thread: the node is embedded)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def crank_settled(core, timeout: float) -> float:
    """Waits until the crank has no turn due and has stopped restoring or skipping; returns the seconds waited."""
    ev, t0 = core.core.evaluator, time.monotonic()
    seen, still = None, 0.0
    while time.monotonic() - t0 < timeout:
        now = (core.core.queued(), ev.metrics["restores"], ev.metrics.get("crank_idle", 0), ev.metrics["evaluations"])
        still = still + 0.5 if now == seen and now[0] == 0 else 0.0
        if still >= 2.0:
            break
        seen = now
        time.sleep(0.5)
    return time.monotonic() - t0


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=10_000)
    ap.add_argument("--max-warm", type=int, default=64)
    ap.add_argument("--lifecycle", choices=("fast", "classic"), default="fast")
    ap.add_argument("--data-dir", help="keep the node's data here (default: a temporary directory)")
    ap.add_argument("--crank-delay", type=float, default=30.0, help="seconds from acknowledgement to crank turn")
    ap.add_argument("--restore-idle", action="store_true",
                    help="baseline: the crank restores every evicted process it is told about")
    args = ap.parse_args()
    load = os.getloadavg()
    print(f"load: {load[0]:.2f} {load[1]:.2f} (1/5 min), {os.cpu_count()} CPUs; {args.processes} processes, "
          f"max-warm {args.max_warm}, lifecycle {args.lifecycle}, crank delay {args.crank_delay} s"
          f"{', crank restores idle processes (baseline)' if args.restore_idle else ''}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="aocu-many-") as tmp:
        data = Path(args.data_dir or tmp) / "node"
        core, client, sched = embedded_node({"data_dir": data, "max_warm": args.max_warm, "crank_delay_s": args.crank_delay,
                                             "lifecycle": args.lifecycle})
        owner, sender = Ed25519Key.generate(), Ed25519Key.generate()
        module_id = upload_lua32(sched.ingest, owner)
        m = core.core.evaluator.metrics
        if args.restore_idle:
            core.core.evaluator.has_work = lambda pid, upto=None: True
        rows = []
        pids: list[str] = []
        base_rss = rss()[0]
        cpu_start = cpu()
        for rnd in (1, 2):
            ingest, read = [], []
            t_round, cpu0, restores0, idle0 = time.perf_counter(), cpu(), m["restores"], m["crank_idle"]
            for i in range(args.processes):
                t0 = time.perf_counter()
                if rnd == 1:
                    pids.append(spawn(sched.ingest, owner, module_id, [("Name", f"p{i}")]))
                pid = pids[i]
                msg = DataItem.create(sender, data=b"", target=pid, tags=[
                    ("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Count"), ("Round", str(rnd))])
                mid = sched.ingest(msg.to_bytes()).id
                t1 = time.perf_counter()
                out = json.loads(client.result(pid, mid))
                t2 = time.perf_counter()
                if out.get("Output") != str(rnd):
                    raise SystemExit(f"{pid}: unexpected result {out}")
                ingest.append(t1 - t0)
                read.append(t2 - t1)
                if (i + 1) % 1000 == 0:
                    print(f"  round {rnd}: {i + 1} processes, {time.perf_counter() - t_round:.0f} s, "
                          f"RSS {rss()[0] >> 20} MiB", file=sys.stderr)
            wall = time.perf_counter() - t_round
            core.core.evaluator.procs.drain()
            core.store.flush()
            cur, peak = rss()
            rows.append({"round": rnd, "ingest_p50_ms": statistics.median(ingest) * 1e3,
                         "ingest_p99_ms": pct(ingest, 0.99) * 1e3, "result_p50_ms": statistics.median(read) * 1e3,
                         "result_p99_ms": pct(read, 0.99) * 1e3, "wall_s": wall,
                         "per_s": args.processes / wall, "cpu_ms_per_msg": (cpu() - cpu0) * 1e3 / args.processes,
                         "restores": int(m["restores"] - restores0), "crank_idle": int(m["crank_idle"] - idle0),
                         "rss_mib": cur / 2**20, "rss_anon_mib": status()["RssAnon"] / 2**20,
                         "rss_peak_mib": peak / 2**20, "disk_mib": du(data) / 2**20})
        cpu_settle = cpu()
        waited = crank_settled(core, args.crank_delay + 600)
        cpu_settle = cpu() - cpu_settle
        total = 2 * args.processes
        print(f"  crank settled {waited:.0f} s after round 2 (CPU meanwhile {cpu_settle:.2f} s): restores "
              f"{m['restores']:.0f} for {total} messages ({m['restores'] / total:.2f} per message), crank turns "
              f"that restored nothing {m['crank_idle']:.0f}; CPU of the whole run "
              f"{(cpu() - cpu_start) * 1e3 / total:.2f} ms per message, RSS {rss()[0] >> 20} MiB", file=sys.stderr)
        print(f"  node: warm {core.core.evaluator.warm()}, checkpoints {m['checkpoints']:.0f} "
              f"(deltas {m.get('checkpoint_deltas', 0):.0f}), restores {m['restores']:.0f} "
              f"(from memory {m.get('restores_evicted', 0):.0f}), RSS before spawning {base_rss >> 20} MiB",
              file=sys.stderr)
        core.stop()
    cols = list(rows[0])
    print(" ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print(" ".join(f"{r[c]:14.2f}" if isinstance(r[c], float) else f"{r[c]:>14}" for c in cols))


if __name__ == "__main__":
    main()
