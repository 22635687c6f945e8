"""Mainnet-mode round trips next to the legacy one, measured in the same run on the same node.

    python bench/mainnet.py [--n 300] [--workers 2] [--threads 4] [--wasm lua32.wasm]

One `aocu serve --tee sim` node, one process of the project's Lua test module (trivial `Echo` handler), one
keep-alive client; every message is pre-signed before the clock starts. Each round trip is "message in, its
signed result out":
- legacy:           POST / (ANS-104 item)  +  GET /result/{id}?process-id=            (two requests)
- mainnet ans104:   POST /{pid}~process@1.0/push with the item (codec-device: ans104@1.0)  (one request: the
                    node schedules, evaluates and answers with the result, as HyperBEAM's push does)
- mainnet httpsig:  the same push as an RFC 9421-signed httpsig@1.0 request (ed25519 commitment, and the RSA-PSS
                    4096 commitment ao-core-libs makes)
Ratios are against the legacy round trip of the same run. Also: the in-process cost of verifying one httpsig
message (parse + signatures + content-digest) per key type, next to verifying the equivalent ANS-104 item.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from node import RawClient, call, free_port, setup, start_node  # noqa: E402

from cu.codec.ans104 import DataItem  # noqa: E402
from cu.codec.message import Message  # noqa: E402
from cu.codec.wallet import ArweaveWallet, Ed25519Key  # noqa: E402


def _item(key: object, pid: str, i: int, prefix: str = "m") -> DataItem:
    return DataItem.create(key, data=f"{prefix}{i}".encode(), target=pid,  # type: ignore[arg-type]
                           tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Variant", "ao.N.1"),
                                 ("Action", "Echo"), ("require-codec", "application/json")])


def _httpsig(key: object, pid: str, i: int, prefix: str = "m") -> tuple[dict[str, str], bytes]:
    msg = Message({"action": "Echo", "data": f"{prefix}{i}", "data-protocol": "ao", "type": "Message",
                   "variant": "ao.N.1", "target": pid, "require-codec": "application/json"})
    msg.commit(key)
    headers, body = msg.to_http()
    return dict(headers), body


def _p50(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


def round_trips(port: int, n: int, one: Callable[[RawClient, int], None]) -> list[float]:
    conn = RawClient("127.0.0.1", port)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        one(conn, i)
        out.append(time.perf_counter() - t0)
    conn.close()
    return out[n // 5:]      # the first fifth warms connections and caches


def verify_costs(pid: str, n: int = 200) -> dict[str, float]:
    """µs per message: what the node does to accept one (parse + verify signatures and digest)."""
    ed, rsa = Ed25519Key.generate(), ArweaveWallet.generate()
    out: dict[str, float] = {}
    for name, key in (("ed25519", ed), ("rsa-pss-4096", rsa)):
        headers, body = _httpsig(key, pid, 0)
        item = _item(key, pid, 0).to_bytes()

        def hs(headers: dict[str, str] = headers, body: bytes = body) -> None:
            assert Message.from_http(list(headers.items()), body).verify()

        def ans(raw: bytes = item) -> None:
            assert DataItem.parse(raw).verify()
        for label, fn in ((f"httpsig {name}", hs), (f"ans104 {name}", ans)):
            fn()
            t = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                t.append(time.perf_counter() - t0)
            out[label] = 1e6 * statistics.median(t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="round trips per phase")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--wasm", help="a prebuilt lua32 module (default: tests.modules.build)")
    args = ap.parse_args()
    if args.wasm:
        wasm = Path(args.wasm).read_bytes()
    else:
        from tests.modules.build import build
        wasm = build("lua32").read_bytes()
    tmp = Path(tempfile.mkdtemp(prefix="aocu-bench-mainnet-"))
    port = free_port()
    node = start_node(tmp / "data", port, args.workers, args.threads)
    try:
        (pid,) = setup(port, wasm, 1)
        ed, rsa = Ed25519Key.generate(), ArweaveWallet.generate()
        print(f"pre-signing {args.n} messages per phase (RSA-4096 signing is slow) ...", file=sys.stderr)
        few = max(20, args.n // 5)
        legacy = [_item(ed, pid, i, "l").to_bytes() for i in range(args.n)]
        m_ans = [_item(ed, pid, i, "a").to_bytes() for i in range(args.n)]
        m_hs = [_httpsig(ed, pid, i, "h") for i in range(args.n)]
        m_ans_rsa = [_item(rsa, pid, i, "r").to_bytes() for i in range(few)]
        m_rsa = [_httpsig(rsa, pid, i, "s") for i in range(few)]
        ans_h = {"codec-device": "ans104@1.0", "Content-Type": "application/ans104"}

        def legacy_rt(c: RawClient, i: int) -> None:
            raw = legacy[i]
            assert call(c, "POST", "/", raw)[0] == 202
            mid = DataItem.parse(raw).id
            status, body = call(c, "GET", f"/result/{mid}?process-id={pid}")
            assert status == 200 and f'"l{i}"'.encode() in body, body[:200]

        def push(prefix: str, headers: Callable[[int], dict[str, str]],
                 body: Callable[[int], bytes]) -> Callable[[RawClient, int], None]:
            def one(c: RawClient, i: int) -> None:
                status, out = c.call("POST", f"/{pid}~process@1.0/push", body(i), headers(i))
                assert status == 200 and f'"{prefix}{i}"'.encode() in out, (status, out[:300])
            return one

        phases = [
            ("legacy  (POST / + GET /result)", args.n, legacy_rt),
            ("mainnet ans104 ed25519 (push)", args.n, push("a", lambda i: ans_h, lambda i: m_ans[i])),
            ("mainnet httpsig ed25519 (push)", args.n, push("h", lambda i: m_hs[i][0], lambda i: m_hs[i][1])),
            ("mainnet ans104 rsa-4096 (push)", len(m_ans_rsa), push("r", lambda i: ans_h,
                                                                    lambda i: m_ans_rsa[i])),
            ("mainnet httpsig rsa-4096 (push)", len(m_rsa), push("s", lambda i: m_rsa[i][0],
                                                                 lambda i: m_rsa[i][1])),
        ]
        base = None
        print(f"{'round trip':34} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} {'vs legacy':>10}")
        for name, n, fn in phases:
            t = round_trips(port, n, fn)
            p50 = _p50(t)
            base = base or p50
            p90 = 1000 * sorted(t)[int(0.9 * (len(t) - 1))]
            print(f"{name:34} {len(t):5d} {p50:8.2f} {p90:8.2f} {p50 / base:9.2f}x")
        print("\nverification per message, in process (µs, p50):")
        for name, us in verify_costs(pid).items():
            print(f"  {name:24} {us:8.1f}")
    finally:
        node.terminate()
        node.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
