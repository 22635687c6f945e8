"""Cluster benchmark: results/s of three `aocu serve` nodes on one PostgreSQL database next to one node on its
embedded SQLite store, in the same run, with the same clients (bench/node.py's load generator).

    python bench/cluster.py [--clients 6] [--seconds 8] [--workers 1] [--threads 4] [--evaluators 1]

Each client owns one AO process (the Lua test module's trivial `Echo`) and loops POST `/` + GET `/result`.
Runs, each on fresh nodes and a fresh database:
  sqlite-1      one node, SQLite (the baseline);
  pg-1          one node on PostgreSQL (the cost of the server store alone);
  pg-3          three nodes on one PostgreSQL; client i talks to node i % 3, which spawned (and leases) its
                process: no forwarding;
  pg-3-forward  the same, but client i reads results through node (i + 1) % 3: every read is forwarded.
The PostgreSQL server is private (tests/pg.py) with fsync on, like SQLite's durable acknowledgement. CPU per
result is summed over the nodes' processes and the database server's (the clients excluded). On a 2-CPU machine
three nodes share the same two CPUs: the run shows the cluster's overhead, not its scaling across machines.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import node as bn  # noqa: E402
from cu.codec.ans104 import DataItem  # noqa: E402
from cu.codec.wallet import ArweaveWallet, Ed25519Key  # noqa: E402
from tests.pg import PgServer  # noqa: E402


def start(data_dir: Path, port: int, args: argparse.Namespace, store: str | None) -> object:
    """bench/node.py's node, with `--store` (and this node's URL) when given."""
    extra = ["--store", store, "--node-url", f"http://127.0.0.1:{port}"] if store else []
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("AOCU_EVALUATORS", None)
    import subprocess
    proc = subprocess.Popen([sys.executable, "-m", "cu.cli", "serve", "--bind", f"127.0.0.1:{port}",
                             "--data-dir", str(data_dir), "--tee", "sim", "--workers", str(args.workers),
                             "--threads", str(args.threads), "--evaluators", str(args.evaluators), "--quiet",
                             *extra], env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if bn.call(bn.connect(port, "http.client"), "GET", "/health")[0] == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("node did not start")


def _call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = bn.connect(port, "http.client")
    try:
        return bn.call(conn, method, path, body)
    finally:
        conn.close()


def setup(ports: list[int], wasm: bytes, clients: int) -> list[str]:
    """The module through the first node; client i's process spawned (so leased) through node i % len(ports)."""
    wallet = ArweaveWallet.generate()
    conns = ports       # a new connection per request (_call): setup is slow, idle keep-alives get closed
    module = DataItem.create(wallet, data=wasm, tags=[
        ("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", "wasm32-unknown-emscripten2"),
        ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"), ("Memory-Limit", "512-mb"),
        ("Compute-Limit", "9000000000000")])
    assert _call(conns[0], "POST", "/", module.to_bytes())[0] == 202
    pids = []
    for i in range(clients):
        c = conns[i % len(conns)]
        p = DataItem.create(wallet, data=b"", tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                                   ("Module", module.id), ("Name", f"bench-{i}")])
        assert _call(c, "POST", "/", p.to_bytes())[0] == 202
        m = DataItem.create(Ed25519Key.generate(), data=b"warm", target=p.id,
                            tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Echo")])
        assert _call(c, "POST", "/", m.to_bytes())[0] == 202
        status, body = _call(c, "GET", f"/result/{m.id}?process-id={p.id}")
        assert status == 200 and json.loads(body)["Output"] == "warm", body
        pids.append(p.id)
    return pids


def client(post_port: int, read_port: int, pid: str, seconds: float, n: int, start_at: float, q: mp.Queue) -> None:
    key = Ed25519Key.generate()
    items = [DataItem.create(key, data=f"m{i}".encode(), target=pid, tags=[
        ("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Echo")]) for i in range(n)]
    items = [(it.id, it.to_bytes()) for it in items]
    post, read = bn.connect(post_port, "raw"), bn.connect(read_port, "raw")
    lat: list[float] = []
    errors = 0
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    for mid, raw in items:
        if time.time() >= end:
            break
        t0 = time.perf_counter()
        try:
            s1, _ = bn.call(post, "POST", "/", raw)
            s2, body = bn.call(read, "GET", f"/result/{mid}?process-id={pid}")
            ok = s1 == 202 and s2 == 200 and b'"Output":"m' in body
        except OSError:
            ok = False
            post.close()
            read.close()
        lat.append(time.perf_counter() - t0)
        errors += not ok
    q.put((lat, errors))


def server_cpu(pg: PgServer) -> float:
    """CPU seconds of the PostgreSQL server (postmaster and its backends)."""
    try:
        master = int((pg.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == master or int(stat[1]) == master:
            total += (int(stat[11]) + int(stat[12])) / tick
    return total


def run(name: str, nodes: int, store: PgServer | None, args: argparse.Namespace, wasm: bytes, tmp: Path,
        forward: bool = False) -> dict:
    dsn = store.database() if store else None
    ports = [bn.free_port() for _ in range(nodes)]
    procs = [start(tmp / f"{name}-{i}", p, args, dsn) for i, p in enumerate(ports)]
    try:
        pids = setup(ports, wasm, args.clients)
        n = int(args.seconds * 2000 / args.clients) + 100
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        start_at = time.time() + 1.0 + n * args.clients / 4000.0
        cs = [ctx.Process(target=client, args=(ports[i % nodes], ports[(i + forward) % nodes], pid, args.seconds,
                                               n, start_at, q)) for i, pid in enumerate(pids)]
        for c in cs:
            c.start()
        while time.time() < start_at:
            time.sleep(0.01)
        cpu0 = sum(sum(bn.node_cpu(p.pid).values()) for p in procs) + (server_cpu(store) if store else 0.0)
        lat, errors = bn.gather(q, len(cs), args.seconds + 300)
        cpu1 = sum(sum(bn.node_cpu(p.pid).values()) for p in procs) + (server_cpu(store) if store else 0.0)
        for c in cs:
            c.join()
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    lat.sort()
    return {"name": name, "n": len(lat), "errors": errors, "per_s": len(lat) / args.seconds,
            "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[int(len(lat) * 0.99) - 1],
            "cpu_ms": 1000 * (cpu1 - cpu0) / max(1, len(lat))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--evaluators", type=int, default=1)
    args = ap.parse_args()
    from tests.modules.build import build
    wasm = build("lua32").read_bytes()
    load0 = os.getloadavg()[0]
    pg = PgServer(fsync=True).start()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="aocu-cluster-bench-") as tmp:
            rows.append(run("sqlite-1", 1, None, args, wasm, Path(tmp)))
            rows.append(run("pg-1", 1, pg, args, wasm, Path(tmp)))
            rows.append(run("pg-3", 3, pg, args, wasm, Path(tmp)))
            rows.append(run("pg-3-forward", 3, pg, args, wasm, Path(tmp), forward=True))
    finally:
        pg.stop()
    print(f"aocu cluster bench: {args.clients} clients (POST / + GET /result, Lua Echo), per node workers="
          f"{args.workers} threads={args.threads} evaluators={args.evaluators}, {os.cpu_count()} CPUs, "
          f"PostgreSQL {pg.bin.parent.name} (fsync on), load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'run':14} {'n':>7} {'err':>4} {'results/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU/result ms':>14} "
          f"{'vs sqlite-1':>11}")
    base = rows[0]["per_s"]
    for r in rows:
        print(f"{r['name']:14} {r['n']:7d} {r['errors']:4d} {r['per_s']:10.0f} {r['p50_ms']:8.2f} "
              f"{r['p99_ms']:8.2f} {r['cpu_ms']:14.2f} {r['per_s'] / base:11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
