"""Process lifecycle benchmark: many AOS-like processes on one node with few warm instances, round-robin.

    python bench/lifecycle.py [--processes 200] [--max-warm 32] [--rounds 3] [--heap 20000] [--only fast]

An embedded node (evaluator in this process, as tests/lua_process.py builds it) holds `--processes` processes of
the project's Lua module (lua32). Each process is spawned, then:
  1. first result: one light message (`Count`); the timed call is the result read, which loads the process
     (init image or instantiation), evaluates its Type=Process message and the message;
  2. a set-up round gives every process an AOS-like heap (`--heap` Lua strings in a table, ~1.8 MB);
  3. `--rounds` timed rounds, round-robin: one `Eval` per process that changes a little of its state; with
     `--max-warm` below `--processes` every message goes to an evicted process.
The same run measures the node with `lifecycle = "classic"` (full checkpoints written by the evicting
request, restores re-hashed against the page-Merkle root: the paths before issue 19), `"fast"` (init images,
incremental checkpoints, eviction checkpointed in the background, recently evicted states kept compressed in
memory, deltas in native code), "fast-python" (the same with the native page deltas turned off in this
process: deltas in Python, as before) and "fast-cow" (the same as "fast" with evicted states restored
copy-on-write through page images built in native code: checkpoints.COW_RESTORES); "fast-2pass" (only when
asked with --only: "fast" with each eviction's delta taken as before the one-pass `pagedelta.capture_diff`, a full
capture and then a diff of the two images, for comparing the two in one run). Per round: result latency
p50/p99, process CPU per message (all threads, the background ones included), CPU of the requesting thread per
message (it evaluates: the request path), checkpoint bytes written per process, growth of the store file. Then
the fast node is restarted on its data dir and one more round reads every process back from its stored checkpoint chain ("cold").
A last phase gives the floor: each process gets a message (evicted) and then the timed one (warm).
The crank is held off (an hour): every message is read at once, and a crank pass would only load evicted
processes to find nothing to do. Results of both modes are compared message by message (they must be identical). The ratio line averages the
evicted rounds from the second on: the first one after the set-up round rebases every chain on a new full
checkpoint (the set-up replaced most of the heap).
Targets (issue 19): first result p50 <= 10 ms, evicted p50 <= 10 ms, disk per process per round <= 1/4.
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
from cu.codec.wallet import ArweaveWallet, Ed25519Key  # noqa: E402
from cu.node.eval import checkpoints  # noqa: E402
from tests.lua_process import embedded_node, spawn, upload_lua32  # noqa: E402

MODES = ("classic", "fast-python", "fast", "fast-cow")
EXTRA_MODES = ("fast-2pass",)


class _TwoPass:
    """The native page-delta module without `capture_diff` (checkpoints.py then captures and diffs)."""

    def __init__(self, pd: object) -> None:
        self._pd = pd

    def __getattr__(self, name: str) -> object:
        if name == "capture_diff":
            raise AttributeError(name)
        return getattr(self._pd, name)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def store_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("node.sqlite*"))


class Node:
    def __init__(self, data_dir: Path, mode: str, max_warm: int) -> None:
        self.data_dir = data_dir
        self.core, self.client, self.sched = embedded_node({
            "data_dir": data_dir, "max_warm": max_warm, "crank_delay_s": 3600.0, "lifecycle": mode})
        self.key = Ed25519Key.generate()
        self.sent = 0
        self.request_cpu = 0.0

    def send(self, pid: str, action: str, data: str = "") -> tuple[float, str]:
        self.sent += 1        # a tag of its own: the same signed bytes twice would be one message
        m = DataItem.create(self.key, data=data.encode(), target=pid,
                            tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", action),
                                  ("Sent", str(self.sent))])
        acc = self.sched.ingest(m.to_bytes())
        t0, c0 = time.perf_counter(), time.thread_time()
        body = self.client.result(pid, acc.id)
        dt = time.perf_counter() - t0
        self.request_cpu += time.thread_time() - c0
        res = json.loads(body)
        if res.get("Error"):
            raise SystemExit(f"{pid}: {res['Error']}")
        return dt, json.dumps(res.get("Output"), sort_keys=True)

    def checkpoint_bytes(self) -> float:
        return self.core.core.evaluator.metrics["checkpoint_bytes"]

    def settle(self) -> None:
        self.core.core.evaluator.procs.drain()
        self.core.store.flush()

    def stop(self) -> None:
        self.core.stop()


def timed_round(node: Node, pids: list[str], action: str, data: str, outputs: list[str],
                twice: bool = False) -> dict[str, float]:
    node.settle()
    disk0, cp0, c0, r0 = store_bytes(node.data_dir), node.checkpoint_bytes(), cpu(), node.request_cpu
    lat = []
    for pid in pids:
        if twice:
            outputs.append(node.send(pid, action, data)[1])
        dt, out = node.send(pid, action, data)
        lat.append(dt)
        outputs.append(out)
    node.settle()          # the background checkpoints of this round are part of its cost
    n = len(pids) * (2 if twice else 1)      # CPU and bytes per message sent; latency of the timed ones
    return {"p50_ms": statistics.median(lat) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3,
            "cpu_ms_per_msg": (cpu() - c0) / n * 1e3, "request_cpu_ms": (node.request_cpu - r0) / n * 1e3,
            "checkpoint_kb_per_proc": (node.checkpoint_bytes() - cp0) / n / 1e3,
            "store_growth_kb_per_proc": (store_bytes(node.data_dir) - disk0) / n / 1e3}


def run(mode: str, args: argparse.Namespace, root: Path) -> tuple[dict[str, dict[str, float]], list[str]]:
    native, cow = checkpoints._pd, checkpoints.COW_RESTORES
    if mode == "fast-python":
        checkpoints._pd = None       # read by each Checkpoints object it builds (checkpoints.py)
    elif mode == "fast-2pass" and native is not None:
        checkpoints._pd = _TwoPass(native)
    checkpoints.COW_RESTORES = mode == "fast-cow"
    try:
        return _run(mode, args, root)
    finally:
        checkpoints._pd, checkpoints.COW_RESTORES = native, cow


def _run(mode: str, args: argparse.Namespace, root: Path) -> tuple[dict[str, dict[str, float]], list[str]]:
    data_dir = root / mode
    lifecycle = "fast" if mode.startswith("fast") else mode
    node = Node(data_dir, lifecycle, args.max_warm)
    owner = ArweaveWallet.generate()
    module_id = upload_lua32(node.sched.ingest, owner)
    pids = [spawn(node.sched.ingest, owner, module_id, [("Name", f"p{i}")]) for i in range(args.processes)]
    outputs: list[str] = []
    rows = {"first result": timed_round(node, pids, "Count", "", outputs)}
    heap = f"Data = {{}} for k = 1, {args.heap} do Data[k] = 'entry ' .. k end return #Data"
    rows["set-up (heap)"] = timed_round(node, pids, "Eval", heap, outputs)
    step = "Count = (Count or 0) + 1; Data[Count] = tostring(Count) .. ' changed'; return Count"
    for r in range(args.rounds):
        rows[f"evicted, round {r + 1}"] = timed_round(node, pids, "Eval", step, outputs)
    # the floor: the same message to a warm process (each process gets one untimed message first)
    rows["warm (baseline)"] = timed_round(node, pids, "Eval", step, outputs, twice=True)
    m = node.core.core.evaluator.metrics
    extra = {k: m.get(k, 0) for k in ("checkpoints", "checkpoint_deltas", "restores", "restores_evicted",
                                      "init_image_starts", "evictions_count")}
    node.stop()
    if lifecycle == "fast":
        node = Node(data_dir, lifecycle, args.max_warm)       # restarted: every state comes from the store
        rows["cold (restarted)"] = timed_round(node, pids, "Eval", step, outputs)
        node.stop()
    print(f"  {mode}: {extra}", file=sys.stderr)
    return rows, outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=200)
    ap.add_argument("--max-warm", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--heap", type=int, default=20000, help="Lua strings each process keeps (its heap)")
    ap.add_argument("--only", choices=MODES + EXTRA_MODES, action="append",
                    help="run only these modes (repeatable, in this order; a mode given twice runs twice)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1/5 min), {os.cpu_count()} CPUs", file=sys.stderr)
    results: dict[str, dict[str, dict[str, float]]] = {}
    outs: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="aocu-lifecycle-") as tmp:
        for mode in (args.only or MODES):
            label = mode if mode not in results else f"{mode}#{sum(k.split('#')[0] == mode for k in results) + 1}"
            print(f"running {label} ...", file=sys.stderr)
            results[label], outs[label] = run(mode, args, Path(tmp) / label)
    if len(outs) > 1:
        n = min(len(o) for o in outs.values())
        same = all(o[:n] == next(iter(outs.values()))[:n] for o in outs.values())
        print(f"results identical in all modes: {same} ({n} messages)")
    if args.json:
        print(json.dumps(results, indent=1))
        return
    cols = ("p50_ms", "p99_ms", "cpu_ms_per_msg", "request_cpu_ms", "checkpoint_kb_per_proc",
            "store_growth_kb_per_proc")
    print(f"{'':24} {'mode':13} " + " ".join(f"{c:>24}" for c in cols))
    phases = list(dict.fromkeys(p for rows in results.values() for p in rows))
    for phase in phases:
        for mode, rows in results.items():
            if phase in rows:
                print(f"{phase:24} {mode:13} " + " ".join(f"{rows[phase][c]:24.2f}" for c in cols))
    for new, old in (("fast", "classic"), ("fast", "fast-python"), ("fast-cow", "fast"), ("fast", "fast-2pass")):
        if new not in results or old not in results:
            continue
        c, f = results[old], results[new]
        ev = [k for k in c if k.startswith("evicted")][1:]    # round 1 rebases the chains after the set-up
        ratio = lambda key, rows, ev=ev: statistics.mean(rows[k][key] for k in ev)  # noqa: E731
        print(f"ratios {new}/{old} (evicted: rounds 2+): first result p50 "
              f"{f['first result']['p50_ms'] / c['first result']['p50_ms']:.2f}, "
              f"evicted p50 {ratio('p50_ms', f) / ratio('p50_ms', c):.2f}, request CPU "
              f"{ratio('request_cpu_ms', f) / max(ratio('request_cpu_ms', c), 1e-9):.2f}, checkpoint bytes per round "
              f"{ratio('checkpoint_kb_per_proc', f) / max(ratio('checkpoint_kb_per_proc', c), 1e-9):.3f}, "
              f"CPU per message {ratio('cpu_ms_per_msg', f) / ratio('cpu_ms_per_msg', c):.2f}")


if __name__ == "__main__":
    main()
