"""Evaluator-only benchmark: the evaluator's two operations of a message->result round trip (Schedule, then
Result) driven straight on its Unix socket by client processes, no HTTP, so the evaluator's own CPU and context
switches per result are measured without the gunicorn workers' load.

    python bench/evaluator.py [--clients 4] [--seconds 8] [--data-root /dev/shm] [--profile out.txt]

A node (`aocu serve --tee sim`, one evaluator) is started; each client owns one AO process (the trivial Lua
`Echo` handler) and loops: Schedule (durable ack) then Result. Reported per result: evaluator CPU (user +
system, every thread), context switches (voluntary + involuntary, summed over the evaluator's threads), store
commits, p50/p99 of the pair. `--profile FILE` also samples the evaluator with py-spy during the phase.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.node import (  # noqa: E402
    free_port,
    gather,
    node_counters,
    node_processes,
    run_phase,
    setup,
    start_node,
    stop_node,
)
from cu.codec.ans104 import DataItem  # noqa: E402
from cu.codec.wallet import Ed25519Key  # noqa: E402


def evaluator_pid(node_pid: int) -> int:
    pids = [int(entry) for role, entry, _ in node_processes(node_pid) if role == "evaluator"]
    if len(pids) != 1:
        raise SystemExit(f"expected one evaluator process, found {len(pids)}")
    return pids[0]


THREADS: dict[str, list[int]] = {}       # --threads: tid -> [switches before, after]


def proc_counts(pid: int) -> tuple[float, int]:
    """(CPU seconds, context switches) of process `pid`, every live thread's switches summed."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    switches = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            n = 0
            for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    n += int(line.split()[1])
            switches += n
            THREADS.setdefault(tid, []).append(n)
        except OSError:
            continue
    return cpu, switches


def thread_names(pid: int) -> dict[str, str]:
    """tid -> Python thread name of the evaluator's threads (through py-spy, when it is installed)."""
    import re
    try:
        out = subprocess.run(["py-spy", "dump", "-p", str(pid)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(re.findall(r'^Thread (\d+) \([^)]*\): "([^"]*)"', out, re.M))


def thread_switches(k: int, names: dict[str, str]) -> str:
    """Per result, the context switches of each evaluator thread that had any (busiest first), named."""
    d = sorted(((v[-1] - (v[0] if len(v) > 1 else 0)) / k, tid) for tid, v in THREADS.items())
    return " ".join(f"{names.get(tid, tid)}={x:.2f}" for x, tid in reversed(d) if x >= 0.01)


def client(sock_path: str, pid: str, n: int, start_at: float, seconds: float, q: mp.Queue) -> None:
    from cu.node.client import over_socket
    from cu.node.items import item_meta
    from cu.node.store import ScheduleOp
    key = Ed25519Key.generate()
    ops = []
    for i in range(n):
        item = DataItem.create(key, data=f"m{i}".encode(), target=pid,
                               tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Echo")])
        ops.append(ScheduleOp("message", pid, item.id, (item_meta(item), item.to_bytes())))
    ev = over_socket(sock_path)
    lat: list[float] = []
    errors = 0
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    for i, op in enumerate(ops):
        if time.time() >= end:
            break
        t0 = time.perf_counter()
        ev.submit(op)
        body = ev.result(pid, op.message_id)
        lat.append(time.perf_counter() - t0)
        errors += json.loads(body).get("Output") != f"m{i}"
    q.put((lat, errors))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--http", action="store_true",
                    help="drive the node through HTTP as bench/node.py does (workers=2 threads=4), still reporting "
                         "the evaluator's own CPU and context switches")
    ap.add_argument("--profile", help="py-spy the evaluator during the phase, raw stacks to this file")
    ap.add_argument("--gil", action="store_true", help="with --profile: only samples of the thread holding the GIL")
    args = ap.parse_args()
    from tests.modules.build import build
    wasm = build("lua32").read_bytes()
    with tempfile.TemporaryDirectory(prefix="aocu-bench-ev-", dir=args.data_root) as tmp:
        port = free_port()
        data = Path(tmp) / "data"
        node = start_node(data, port, 2 if args.http else 1, 4 if args.http else 2, 1)
        try:
            pids = setup(port, wasm, args.clients)
            ev = evaluator_pid(node.pid)
            n = int(args.seconds * 3000 / args.clients) + 100
            if args.http:
                m0, c0, load0 = node_counters(port), proc_counts(ev), os.getloadavg()[0]
                r = run_phase(port, list(pids), args.seconds, n, node_pid=node.pid)
                c1, m1 = proc_counts(ev), node_counters(port)
                k = r["n"]
                commits = (m1.get("aocu_store_commits_total", 0) - m0.get("aocu_store_commits_total", 0)) / k
                print(f"node bench over HTTP: {args.clients} clients, {k} results ({r['per_s']:.0f}/s), errors "
                      f"{r['errors']}, p50 {r['p50_ms']:.2f} ms; per result: evaluator CPU "
                      f"{1000 * (c1[0] - c0[0]) / k:.3f} ms, context switches {(c1[1] - c0[1]) / k:.2f}, workers CPU "
                      f"{r['cpu_ms'].get('workers', 0):.3f} ms, commits {commits:.2f}; load {load0:.1f}")
                print("per thread switches per result:", thread_switches(k, thread_names(ev)))
                return 1 if r["errors"] else 0
            ctx = mp.get_context("fork")
            q = ctx.Queue()
            start_at = time.time() + 1.0 + n * args.clients / 3000.0
            procs = [ctx.Process(target=client, args=(str(data / "evaluator.sock"), p, n, start_at, args.seconds, q))
                     for p in pids]
            for p in procs:
                p.start()
            while time.time() < start_at:
                time.sleep(0.001)
            spy = None
            if args.profile:
                spy = subprocess.Popen(["py-spy", "record", "-p", str(ev), "-d", str(int(args.seconds)), "-r", "500",
                                        "-f", "raw", "-o", args.profile, "--threads", *(["--gil"] if args.gil else [])],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            m0 = node_counters(port)
            c0 = proc_counts(ev)
            load0 = os.getloadavg()[0]
            lat, errors = gather(q, len(procs), args.seconds + 300)
            c1 = proc_counts(ev)
            m1 = node_counters(port)
            names = thread_names(ev)
            for p in procs:
                p.join()
            if spy is not None:
                spy.wait(timeout=60)
        finally:
            stop_node(node)
    lat.sort()
    k = len(lat)
    commits = (m1.get("aocu_store_commits_total", 0) - m0.get("aocu_store_commits_total", 0)) / k
    print(f"evaluator bench: {args.clients} clients on the evaluator socket, {k} results in {args.seconds:g} s "
          f"({k / args.seconds:.0f}/s), errors {errors}, p50 {1000 * statistics.median(lat):.2f} ms, "
          f"p99 {1000 * lat[int(k * 0.99) - 1]:.2f} ms; per result: evaluator CPU {1000 * (c1[0] - c0[0]) / k:.3f} ms, "
          f"context switches {(c1[1] - c0[1]) / k:.2f}, commits {commits:.2f}; load {load0:.1f}")
    print("per thread switches per result:", thread_switches(k, names))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
