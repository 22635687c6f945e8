"""Ping-pong between two nodes (outbox delivery, docs/EXCHANGE.md) next to the same ping-pong on one node.

    python bench/exchange.py [--rounds 200] [--codec ans104|httpsig] [--crank-delay 0.02] [--repeat 3]

Two `aocu serve` nodes on loopback, each the other's `--peer`, one process of the project's Lua test module on
each, with a ping-pong handler installed by `Eval` (tests/test_exchange.py): a Ping with `Rounds=n` makes the
process send Ping `Rounds=n-1` to the other one, down to 0. Every hop is one message evaluated and one outbox
message signed (RSA-4096, the node wallet) and delivered: on one node by the scheduling commit of the result
(the baseline), across nodes by the deliverer's `POST /{pid}~process@1.0/schedule` on the other node, which
evaluates it at once (the schedule route notifies the crank without the `--crank-delay` wait). The clock runs from the kick-off message to the last
slot scheduled; reported: messages/s, ms per hop, the added latency per hop, and the ratios.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cu.codec.ans104 import DataItem  # noqa: E402
from cu.codec.wallet import ArweaveWallet, Ed25519Key  # noqa: E402
from tests.test_exchange import PING_PONG  # noqa: E402

MODULE_TAGS = [("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", "wasm32-unknown-emscripten2"),
               ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"), ("Memory-Limit", "512-mb"),
               ("Compute-Limit", "9000000000000")]


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.request(method, path, body=body, headers={"Content-Type": "application/octet-stream"} if body else {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def start(data: Path, port: int, wallet: Path, extra: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "cu.cli", "serve", "--bind", f"127.0.0.1:{port}", "--data-dir",
                             str(data), "--tee", "none", "--workers", "1", "--quiet", "--wallet", str(wallet),
                             *extra], env=dict(os.environ, PYTHONPATH=str(REPO)), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if call(port, "GET", "/health")[0] == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("node did not start")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def post(port: int, item: DataItem) -> None:
    status, body = call(port, "POST", "/", item.to_bytes())
    assert status == 202, body


def result(port: int, pid: str, mid: str) -> dict:
    while True:
        status, body = call(port, "GET", f"/result/{mid}?process-id={pid}")
        if status != 202:
            assert status == 200, body
            return json.loads(body)


def process(port: int, key: Ed25519Key, wasm_item: DataItem, name: str) -> str:
    post(port, wasm_item)
    p = DataItem.create(key, data=b"", tags=[("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Process"),
                                             ("Module", wasm_item.id), ("Name", name)])
    post(port, p)
    ev = DataItem.create(key, data=PING_PONG.encode(), target=p.id,
                         tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Eval")])
    post(port, ev)
    assert result(port, p.id, ev.id)["Output"]["data"] == "ping-pong"
    return p.id


def slot(port: int, pid: str) -> int:
    return int(call(port, "GET", f"/{pid}/slot/current")[1])


def run(key: Ed25519Key, a: tuple[int, str], b: tuple[int, str], rounds: int) -> float:
    """Seconds from the kick-off (Rounds=`rounds` to `a`) until the last Ping is scheduled."""
    base = slot(*a) + slot(*b)
    kick = DataItem.create(key, data=b"go", target=a[1], tags=[
        ("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Ping"), ("Rounds", str(rounds)), ("Peer", b[1]),
        ("Run", os.urandom(8).hex())])     # ed25519 signatures are deterministic: a repeated kick-off is one id
    t0 = time.perf_counter()
    post(a[0], kick)
    deadline = time.monotonic() + 600
    while slot(*a) + slot(*b) < base + rounds + 1:
        if time.monotonic() > deadline:
            raise SystemExit("the ping-pong did not finish")
        time.sleep(0.005)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--codec", choices=("ans104", "httpsig"), default="ans104")
    ap.add_argument("--crank-delay", type=float, default=0.02)
    ap.add_argument("--wasm", help="a prebuilt lua32 module (default: tests.modules.build)")
    args = ap.parse_args()
    if args.wasm:
        wasm = Path(args.wasm).read_bytes()
    else:
        from tests.modules.build import build
        wasm = build("lua32").read_bytes()
    key = Ed25519Key.generate()
    wasm_item = DataItem.create(key, data=wasm, tags=MODULE_TAGS)
    with tempfile.TemporaryDirectory(prefix="aocu-bench-exchange-") as tmp:
        root = Path(tmp)
        wallets = []
        for name in ("a", "b"):
            w = root / f"{name}.json"
            w.write_text(json.dumps(ArweaveWallet.generate().to_jwk()))
            w.chmod(0o600)
            wallets.append(w)
        pa, pb = free_port(), free_port()
        common = ["--push-codec", args.codec, "--crank-delay", str(args.crank_delay)]
        na = start(root / "a", pa, wallets[0], ["--peer", f"http://127.0.0.1:{pb}", *common])
        nb = start(root / "b", pb, wallets[1], ["--peer", f"http://127.0.0.1:{pa}", *common])
        try:
            a1, a2 = process(pa, key, wasm_item, "a1"), process(pa, key, wasm_item, "a2")
            b1 = process(pb, key, wasm_item, "b1")
            run(key, (pa, a1), (pa, a2), 10)          # warm both paths
            run(key, (pa, a1), (pb, b1), 10)
            local, remote = [], []
            for _ in range(args.repeat):
                local.append(run(key, (pa, a1), (pa, a2), args.rounds))
                remote.append(run(key, (pa, a1), (pb, b1), args.rounds))
        finally:
            stop(na)
            stop(nb)
    hops = args.rounds + 1
    lo, re_ = statistics.median(local), statistics.median(remote)
    print(f"ping-pong, {args.rounds} rounds ({hops} messages), median of {args.repeat}; push codec {args.codec}, "
          f"--crank-delay {args.crank_delay:g}")
    print(f"  one node (baseline): {hops / lo:8.1f} messages/s  {1000 * lo / hops:7.2f} ms per hop")
    print(f"  two nodes:           {hops / re_:8.1f} messages/s  {1000 * re_ / hops:7.2f} ms per hop")
    print(f"  added per hop: {1000 * (re_ - lo) / hops:.2f} ms; throughput ratio two/one = {lo / re_:.2f}; "
          f"latency ratio = {re_ / lo:.2f}")
    print("  runs (s): one node " + ", ".join(f"{x:.2f}" for x in local) + "; two nodes "
          + ", ".join(f"{x:.2f}" for x in remote))
    return 0


if __name__ == "__main__":
    sys.exit(main())
