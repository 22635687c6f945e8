"""Hot-path pieces of one message -> result round trip, in-process, CPU time per call: the Python codec against
the native fast paths (native/fast_ans104.cpp via cu/node/fast.py) and the one-write RPC frame, in the same run.

    python bench/hotpath.py [--n 3000] [--node-seconds 0]

Pieces: worker `POST /` item work (parse + verify + item_meta of an ed25519 Echo message), evaluator assignment
(build + sign the SU's ed25519 assignment item and its meta), evaluator RPC frame round trip (request + reply
over a Unix socket pair, both ends in this process), result signing (cu.node.signer's ed25519 HTTP signature).
"before" is AOCU_FASTPATH=0 (cu.codec and cryptography's OpenSSL), "after" the native paths (libsodium ed25519).
`--node-seconds S` also runs bench/node.py's 4-client message phase on a real node (`aocu serve --tee sim`)
with AOCU_FASTPATH=0 and =1, alternated twice: CPU per result by component and results/s of each.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import msgpack  # noqa: E402

import cu.codec.hashes as codec_hashes  # noqa: E402
from cu.codec.ans104 import DataItem  # noqa: E402
from cu.codec.wallet import Ed25519Key  # noqa: E402
from cu.node import fast, wire  # noqa: E402
from cu.node.items import Identity, item_meta  # noqa: E402


def cpu_us(fn: Callable[[], object], n: int) -> float:
    """Best of 3 runs of n calls: CPU microseconds per call (the least disturbed by other load)."""
    fn()
    best = float("inf")
    for _ in range(3):
        c0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - c0) / n)
    return 1e6 * best


def set_fast(on: bool) -> None:
    fast.ENABLED = on
    codec_hashes._FAST_OFF = not on


def two_writes(sock: socket.socket, obj: object) -> None:
    """The frame as sent before the one-write change (length, then body)."""
    data = msgpack.packb(obj, use_bin_type=True)
    sock.sendall(wire._LEN.pack(len(data)))
    sock.sendall(data)


def rpc_round_trip(send: Callable[[socket.socket, object], None], n: int) -> float:
    """CPU us per request + reply (both ends here) of a Schedule-sized frame and a result-sized reply."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.settimeout(60)
    b.settimeout(60)
    req = ["Schedule", "message", "P" * 43, "M" * 43, [["M" * 43, "O" * 43, b"k" * 32, "P" * 43, None, "S" * 86,
                                                       [["Action", "Echo"]] * 3, "Message", 1, 2], b"r" * 300]]
    reply = [True, [["P" * 43, 5, "M" * 43, "A" * 43, 1_700_000_000_000, 1, "H" * 43, 0], True]]

    def echo() -> None:
        for _ in range(n):
            wire.recv_frame(b)
            send(b, reply)

    th = threading.Thread(target=echo)
    th.start()
    c0 = time.process_time()
    for _ in range(n):
        send(a, req)
        wire.recv_frame(a)
    th.join()
    a.close()
    b.close()
    return 1e6 * (time.process_time() - c0) / n


def pieces(n: int) -> list[tuple[str, float, float]]:
    from cu.node.signer import ResultId, build_signer, sign_result
    key = Ed25519Key.generate()
    ident = Identity(wallet=None, ed25519=key)  # type: ignore[arg-type]
    raw = DataItem.create(key, data=b"m1", target="P" * 43,
                          tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Echo")]).to_bytes()

    def ingest() -> None:
        item = DataItem.parse(raw)
        assert item.verify()
        item_meta(item)

    def assignment() -> None:
        ident.build_assignment("P" * 43, "M" * 43, 5, 1_700_000_000_000, 1, "H" * 43, 0)

    def python_vs_native(fn: Callable[[], object]) -> tuple[float, float]:
        set_fast(False)
        before = cpu_us(fn, n)
        set_fast(True)
        return before, cpu_us(fn, n)

    rows = [("worker: POST / item parse + verify + meta", *python_vs_native(ingest)),
            ("evaluator: assignment build + sign + meta", *python_vs_native(assignment)),
            ("RPC frame round trip (request + reply)", rpc_round_trip(two_writes, n),
             rpc_round_trip(wire.send_frame, n))]
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        signer = build_signer(Path(tmp), "sim")
        body = b'{"Output":"m1","Messages":[],"Spawns":[],"Assignments":[],"GasUsed":0}'
        rid = ResultId(process="P" * 43, message="M" * 43)
        rows.append(("worker: result signing (ed25519 httpsig)",
                     *python_vs_native(lambda: sign_result(signer, 200, body, rid))))
    return rows


def node_ab(seconds: float) -> list[tuple[str, dict]]:
    """bench/node.py's 4-client message phase with the fast paths off and on, alternated (off, on, off, on)."""
    import signal
    import tempfile
    sys.path.insert(0, str(REPO / "bench"))
    import node as nb

    from tests.modules.build import build
    wasm = build("lua32").read_bytes()
    out = []
    for setting in ("0", "1", "0", "1"):
        os.environ["AOCU_FASTPATH"] = setting
        port = nb.free_port()
        with tempfile.TemporaryDirectory(prefix="aocu-hot-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
            node = nb.start_node(Path(tmp) / "data", port, 2, 4)
            try:
                pids = nb.setup(port, wasm, 4)
                r = nb.run_phase(port, list(pids), seconds, int(seconds * 2500 / 4) + 100, node_pid=node.pid)
            finally:
                os.killpg(node.pid, signal.SIGTERM)
                node.wait(timeout=60)
        out.append(("fast paths " + ("on" if setting == "1" else "off"), r))
    os.environ.pop("AOCU_FASTPATH", None)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="calls per measurement")
    ap.add_argument("--node-seconds", type=float, default=0.0, help="also A/B a real node for this long a phase")
    args = ap.parse_args()
    rows = pieces(args.n)
    print(f"hot-path pieces, CPU per call (best of 3 x {args.n}), load average {os.getloadavg()[0]:.1f}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'piece':46} {'before us':>10} {'after us':>10} {'ratio':>7}")
    for name, before, after in rows:
        print(f"{name:46} {before:10.1f} {after:10.1f} {after / before:7.2f}")
    saved = sum(b - a for _, b, a in rows)
    print(f"saved per result (one of each): {saved:.1f} us")
    if args.node_seconds > 0:
        print(f"real node, 4 clients, {args.node_seconds:g} s a phase (CPU ms per result by component):")
        for name, r in node_ab(args.node_seconds):
            cpu = {k: v for k, v in r["cpu_ms"].items() if k != "master"}
            node_total = sum(v for k, v in cpu.items() if k != "clients")
            print(f"  {name:16} {r['per_s']:7.0f}/s p50 {r['p50_ms']:6.2f} ms  "
                  + "  ".join(f"{k} {v:.2f}" for k, v in cpu.items())
                  + f"  node total {node_total:.2f} ms  (load {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
