"""Soak under hostile load: an ordinary client and a hostile one against one `aocu serve` on loopback.

    python bench/soak.py [--seconds 600] [--workers 2] [--threads 4] [--rate 20] [--report-every 15]

Starts its own node (bench/node.py `start_node`: --tee sim, 127.0.0.1 only) with two processes of the project's
Lua test module, then for --seconds runs

- the ordinary client: --rate messages per second, each POSTed to `/` and its result read with GET
  `/result/{id}` (latency of that read), and a /health probe 10 times a second;
- the hostile client (issue 17): 8 slowloris connections trickling header bytes (reconnecting when closed),
  4 slow-body connections, 8 threads of runaway dry-runs (`while true do end`) on both processes, and every
  --junk-every seconds the 416 KB GraphQL query, bodies over --max-body (with a Content-Length, and a 40 MiB
  chunked one), and 100k-deep JSON.

Every --report-every seconds it prints the RSS of each node process (master, workers, evaluator), error counts and
the p50/p99 of /health and of ordinary results so far. Exits 1 when /health or ordinary-result p99 is 100 ms or
more, or when an ordinary request failed. Every loop is bounded by --seconds; the node is stopped at the end."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from node import RawClient, free_port, node_processes, setup, start_node  # noqa: E402  (bench/node.py)

from cu.codec.ans104 import DataItem  # noqa: E402
from cu.codec.wallet import Ed25519Key  # noqa: E402

HOST = "127.0.0.1"
LIMIT_P99_S = 0.100
LOOP = json.dumps({"Tags": [{"name": "Action", "value": "Eval"}], "Data": "while true do end"}).encode()


class Soak:
    def __init__(self, port: int, pids: list[str], seconds: float) -> None:
        self.port, self.pids = port, pids
        self.start = time.monotonic()
        self.end = self.start + seconds
        self.lock = threading.Lock()
        self.health: list[float] = []
        self.results: list[float] = []
        self.errors: Counter[str] = Counter()
        self.hostile: Counter[str] = Counter()

    def running(self) -> bool:
        return time.monotonic() < self.end

    def count(self, counter: Counter[str], key: str) -> None:
        with self.lock:
            counter[key] += 1

    # -- the ordinary client ---------------------------------------------------------------------------------
    def ordinary(self, rate: float) -> None:
        key = Ed25519Key.generate()
        conn = RawClient(HOST, self.port, timeout=30)
        i = 0
        next_at = time.monotonic()
        while self.running():
            next_at += 1.0 / rate
            item = DataItem.create(key, data=f"m{i}".encode(), target=self.pids[0],
                                   tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Echo")])
            i += 1
            try:
                s1, _ = conn.call("POST", "/", item.to_bytes(), {"Content-Type": "application/octet-stream"})
                t0 = time.perf_counter()
                s2, body = conn.call("GET", f"/result/{item.id}?process-id={self.pids[0]}", None, {})
                took = time.perf_counter() - t0
                if s1 != 202 or s2 != 200 or b'"Output":"m' not in body:
                    self.count(self.errors, f"ordinary {s1}/{s2}")
                else:
                    with self.lock:
                        self.results.append(took)
            except (OSError, ValueError) as exc:
                self.count(self.errors, f"ordinary {type(exc).__name__}")
                conn.close()
            time.sleep(max(0.0, next_at - time.monotonic()))

    def prober(self) -> None:
        conn = RawClient(HOST, self.port, timeout=30)
        while self.running():
            t0 = time.perf_counter()
            try:
                status, _ = conn.call("GET", "/health", None, {})
                took = time.perf_counter() - t0
                if status != 200:
                    self.count(self.errors, f"health {status}")
                else:
                    with self.lock:
                        self.health.append(took)
                    if took > LIMIT_P99_S:
                        print(f"  slow /health: {took * 1000:.0f} ms at {time.monotonic() - self.start:.1f} s; "
                              f"hostile so far {dict(self.hostile)}", flush=True)
            except (OSError, ValueError) as exc:
                self.count(self.errors, f"health {type(exc).__name__}")
                conn.close()
            time.sleep(0.1)

    # -- the hostile client ----------------------------------------------------------------------------------
    def slowloris(self, body: bool) -> None:
        while self.running():
            try:
                with socket.create_connection((HOST, self.port), timeout=2) as s:
                    s.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 500000\r\n\r\n" if body
                              else b"GET /health HTTP/1.1\r\nHost: a\r\n")
                    while self.running():
                        s.sendall(b"x" if body else b"X-Slow: 1\r\n")
                        time.sleep(1.0)
            except OSError:
                self.count(self.hostile, "slow body closed" if body else "slowloris closed")

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str], name: str,
                timeout: float = 30) -> None:
        conn = RawClient(HOST, self.port, timeout=timeout)
        try:
            status, _ = conn.call(method, path, body, headers)
            self.count(self.hostile, f"{name} {status}")
        except (OSError, ValueError) as exc:
            self.count(self.hostile, f"{name} {type(exc).__name__}")
        finally:
            conn.close()

    def runaway_dry_runs(self, n: int) -> None:
        while self.running():
            self.request("POST", f"/dry-run?process-id={self.pids[n % len(self.pids)]}", LOOP,
                         {"Content-Type": "application/json"}, "dry-run")
            time.sleep(0.05)

    def junk(self, every_s: float) -> None:
        """The big GraphQL query, bodies over the limit, chunked bodies over the limit, deep JSON: in turn, a round
        every `every_s` seconds."""
        gql = json.dumps({"query": "transactions(" * 40000}).encode()
        deep = b"[" * 100_000 + b"]" * 100_000
        while self.running():
            self.request("POST", "/graphql", gql, {"Content-Type": "application/json"}, "graphql")
            self.oversize(chunked=False)
            self.oversize(chunked=True)
            self.request("POST", f"/dry-run?process-id={self.pids[1]}", deep, {"Content-Type": "application/json"},
                         "deep json")
            time.sleep(every_s)

    def oversize(self, chunked: bool) -> None:
        name = "chunked over limit" if chunked else "body over limit"
        try:
            with socket.create_connection((HOST, self.port), timeout=10) as s:
                if chunked:
                    s.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
                    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"x" * (1 << 20))
                    for _ in range(40):            # 40 MiB > the default --max-body of 32 MiB
                        s.sendall(chunk)
                    s.sendall(b"0\r\n\r\n")
                else:
                    s.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 67108864\r\n\r\n")
                reply = s.recv(64)
                self.count(self.hostile, f"{name} {reply[9:12].decode(errors='replace') or 'closed'}")
        except OSError as exc:
            self.count(self.hostile, f"{name} {type(exc).__name__}")


def rss_by_role(node_pid: int) -> dict[str, list[int]]:
    """RSS in MiB of each process of the node's process group, by role."""
    out: dict[str, list[int]] = {"master": [], "workers": [], "evaluator": []}
    for role, entry, _ in node_processes(node_pid):
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        out[role].append(next((int(ln.split()[1]) // 1024 for ln in status.splitlines()
                               if ln.startswith("VmRSS:")), 0))
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] * 1000


def report(soak: Soak, node_pid: int, t0: float) -> str:
    rss = rss_by_role(node_pid)
    with soak.lock:
        h, r, errors, hostile = list(soak.health), list(soak.results), dict(soak.errors), dict(soak.hostile)
    return (f"{time.monotonic() - t0:6.0f}s  rss MiB master {rss['master']} workers {rss['workers']} evaluator "
            f"{rss['evaluator']} | health n={len(h)} p50 {pct(h, .5):.1f} p99 {pct(h, .99):.1f} ms | results "
            f"n={len(r)} p50 {pct(r, .5):.1f} p99 {pct(r, .99):.1f} ms | errors {sum(errors.values())} | hostile "
            f"{sum(hostile.values())}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--rate", type=float, default=20.0, help="ordinary messages per second (default 20)")
    ap.add_argument("--report-every", type=float, default=15.0)
    ap.add_argument("--wasm", help="a prebuilt lua32 module (default: tests.modules.build)")
    ap.add_argument("--junk-every", type=float, default=2.0, metavar="SECONDS",
                    help="pause between rounds of GraphQL / oversize / chunked / deep-JSON requests (default 2)")
    ap.add_argument("--hostile", default="slowloris,slow-body,dry-run,junk",
                    help="hostile parts to run, comma-separated (default all: slowloris,slow-body,dry-run,junk)")
    args = ap.parse_args()
    if args.wasm:
        wasm = Path(args.wasm).read_bytes()
    else:
        from tests.modules.build import build
        wasm = build("lua32").read_bytes()
    with tempfile.TemporaryDirectory(prefix="aocu-soak-", ignore_cleanup_errors=True) as tmp:
        port = free_port()
        node = start_node(Path(tmp) / "data", port, args.workers, args.threads)
        try:
            pids = setup(port, wasm, 2)
            soak = Soak(port, pids, args.seconds)
            threads = [threading.Thread(target=soak.ordinary, args=(args.rate,)),
                       threading.Thread(target=soak.prober)]
            parts = set(args.hostile.split(",")) - {""}
            threads += [threading.Thread(target=soak.slowloris, args=(False,)) for _ in range(8 * ("slowloris" in parts))]
            threads += [threading.Thread(target=soak.slowloris, args=(True,)) for _ in range(4 * ("slow-body" in parts))]
            threads += [threading.Thread(target=soak.runaway_dry_runs, args=(i,)) for i in range(8 * ("dry-run" in parts))]
            threads += [threading.Thread(target=soak.junk, args=(args.junk_every,))] * ("junk" in parts)
            t0 = time.monotonic()
            for t in threads:
                t.daemon = True
                t.start()
            print(f"soak: {args.seconds:g} s, node {args.workers} workers x {args.threads} threads on {HOST}:{port}, "
                  f"ordinary {args.rate:g} msg/s", flush=True)
            while soak.running():
                time.sleep(min(args.report_every, max(0.0, soak.end - time.monotonic())))
                print(report(soak, node.pid, t0), flush=True)
            for t in threads:
                t.join(timeout=35)
            final_rss = rss_by_role(node.pid)
        finally:
            os.killpg(node.pid, signal.SIGTERM)
            try:
                node.wait(timeout=90)
            except Exception:  # noqa: BLE001 - a node that does not stop is killed
                os.killpg(node.pid, signal.SIGKILL)
    h99, r99 = pct(soak.health, .99), pct(soak.results, .99)
    print(f"final rss MiB: {final_rss}")
    print(f"ordinary/health errors: {dict(soak.errors) or 0}")
    print("hostile answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(soak.hostile.items())))
    print(f"/health p50 {pct(soak.health, .5):.1f} ms p99 {h99:.1f} ms (n={len(soak.health)}); results p50 "
          f"{pct(soak.results, .5):.1f} ms p99 {r99:.1f} ms (n={len(soak.results)}), mean "
          f"{statistics.fmean(soak.results) * 1000 if soak.results else float('nan'):.1f} ms")
    ok = h99 < LIMIT_P99_S * 1000 and r99 < LIMIT_P99_S * 1000 and not soak.errors
    print("PASS" if ok else f"FAIL: p99 must stay under {LIMIT_P99_S * 1000:g} ms with no ordinary errors")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
