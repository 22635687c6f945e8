"""ANS-104 parse+verify throughput: aocu (cu.codec) vs arbundles in node, same items, same run.

    python bench/codecs.py [--items N] [--seconds S]

Prints items/s for both and the ratio (target >= 1x) for signature types 1 (RSA-4096 PSS) and 2 (ed25519).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cu.codec import DataItem  # noqa: E402
from cu.codec.wallet import ArweaveWallet, Ed25519Key, rsa_public_key  # noqa: E402

PEERS = ROOT / "tests" / "peers"


def make_items(signer, n: int) -> list[bytes]:
    tags = [("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Message"), ("Action", "Transfer"),
            ("Recipient", "r" * 43), ("Quantity", "1000000000000")]
    return [DataItem.create(signer, data=os.urandom(512), tags=tags + [("Nonce", str(i))],
                            anchor=str(i).zfill(32)).to_bytes() for i in range(n)]


def aocu_rate(raws: list[bytes], seconds: float, cold_keys: bool = False) -> float:
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        for raw in raws:
            if cold_keys:
                rsa_public_key.cache_clear()
            item = DataItem.parse(raw)
            if not item.verify():
                raise SystemExit("aocu failed to verify a bench item")
            item.id  # noqa: B018 - part of "parse": the id is what callers need
            n += 1
    return n / (time.perf_counter() - t0)


def node_rate(raws: list[bytes], seconds: float) -> float:
    node = shutil.which("node")
    if node is None or not (PEERS / "node_modules" / "arbundles").is_dir():
        raise SystemExit("node + arbundles are needed (scripts/install.sh --test)")
    req = {"op": "bench", "items": [base64.b64encode(r).decode() for r in raws], "seconds": seconds}
    proc = subprocess.run([node, str(PEERS / "arbundles_peer.js")], input=json.dumps(req).encode(),
                          capture_output=True, cwd=PEERS, timeout=seconds * 10 + 60)
    if proc.returncode != 0:
        raise SystemExit(f"arbundles bench failed: {proc.stderr.decode()[-1000:]}")
    return float(json.loads(proc.stdout)["items_per_s"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    wallet = ArweaveWallet.generate()
    cases = [("type 1 (RSA-4096 PSS)", make_items(wallet, args.items)),
             ("type 2 (ed25519)", make_items(Ed25519Key.generate(), args.items))]
    print(f"{'case':28} {'aocu items/s':>14} {'arbundles items/s':>18} {'ratio':>7}")
    for name, raws in cases:
        ours = aocu_rate(raws, args.seconds)
        theirs = node_rate(raws, args.seconds)
        print(f"{name:28} {ours:14.0f} {theirs:18.0f} {ours / theirs:6.2f}x")
        if name.startswith("type 1"):
            cold = aocu_rate(raws, args.seconds, cold_keys=True)
            print(f"{'  (no public-key cache)':28} {cold:14.0f} {theirs:18.0f} {cold / theirs:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
