"""Per-result cost of signing + attestation, against baselines measured in the same run.

    python bench/signing.py [--n N] [--body-bytes B]

Baselines: (1) serialising the result JSON alone; (2) serving that JSON through a minimal Flask app
(test client: routing, Response object, headers) — the floor of any result's latency on the node.
Measured: key-binding mode with ed25519 (default path) and with RSA-4096 (rsa-pss-sha512), the ANS-104 form
(RSA-4096 wallet signature), fresh `?attest-nonce` evidence from the simulated SNP/TDX provider, and the
client-side verification (`aocu verify` library, warm certificate caches).
Ratios: overhead / baseline. The issue's target is key-binding overhead <= 5% of a result's latency.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attestation.policy import Policy  # noqa: E402
from attestation.providers import get_provider  # noqa: E402
from attestation.trust import TrustStore  # noqa: E402
from cu.node.evidence_service import EvidenceService  # noqa: E402
from cu.node.identity import NodeIdentity, security_config  # noqa: E402
from cu.node.signer import ResultId, ResultSigner  # noqa: E402
from cu.verify.response import verify_response  # noqa: E402
from cu.verify.transport import RawResponse  # noqa: E402

PID = "Xn" + "a" * 41
MID = "Mm" + "b" * 41


def per_op_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(max(3, n // 20)):
        fn()
    best = float("inf")
    for _ in range(3):  # best of three rounds: the machine is shared
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def result_dict(body_bytes: int) -> dict:
    return {"Output": {"data": "x" * body_bytes, "prompt": "aos> "},
            "Messages": [{"Target": PID, "Tags": [{"name": "Action", "value": "Reply"}], "Data": "ok"}],
            "Spawns": [], "Assignments": [], "GasUsed": 123456}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--body-bytes", type=int, default=1024)
    a = ap.parse_args()
    n = a.n
    res = result_dict(a.body_bytes)
    body = json.dumps(res, separators=(",", ":")).encode()

    d = Path(tempfile.mkdtemp(prefix="aocu-bench-signing-"))
    t0 = time.perf_counter()
    ident = NodeIdentity.load(d, node_config=security_config("sim"))
    keygen_s = time.perf_counter() - t0
    rid = ResultId(process=PID, message=MID)
    nodes = {}
    for tee in ("sim-snp", "sim-tdx"):
        svc = EvidenceService(get_provider(tee, d), ident)
        nodes[tee] = (svc, ResultSigner(svc))
    svc, signer = nodes["sim-snp"]

    from flask import Flask, Response

    app = Flask("bench")

    @app.get("/result/<mid>")
    def _r(mid: str) -> Response:
        return Response(json.dumps(res, separators=(",", ":")), mimetype="application/json")

    signed_app = Flask("bench-signed")

    @signed_app.get("/result/<mid>")
    def _rs(mid: str) -> Response:
        b = json.dumps(res, separators=(",", ":")).encode()
        r = Response(b, mimetype="application/json")
        for k, v in signer.sign(200, b, ResultId(process=PID, message=mid)):
            r.headers[k] = v
        return r

    client, signed_client = app.test_client(), signed_app.test_client()
    url = f"/result/{MID}"

    rows: list[tuple[str, float]] = []
    base_json = per_op_us(lambda: json.dumps(res, separators=(",", ":")).encode(), n)
    base_http = per_op_us(lambda: client.get(url), n // 4)
    signed_http = per_op_us(lambda: signed_client.get(url), n // 4)
    rows.append(("key binding, ed25519 (default)", per_op_us(lambda: signer.sign(200, body, rid), n)))
    rows.append(("key binding, RSA-4096 rsa-pss-sha512",
                 per_op_us(lambda: signer.sign(200, body, rid, alg="rsa-pss-sha512"), max(20, n // 40))))
    rows.append(("ANS-104 item, RSA-4096 wallet", per_op_us(lambda: signer.ans104_result(200, body, rid),
                                                           max(20, n // 40))))
    nonce = os.urandom(32)
    for tee, (_, sg) in nodes.items():
        rows.append((f"fresh nonce, {tee} evidence + ed25519",
                     per_op_us(lambda sg=sg: sg.sign(200, body, rid, attest_nonce=nonce), max(20, n // 20))))
    rows.append(("sim-snp fresh evidence alone",
                 per_op_us(lambda: svc.fresh(b"\0" * 32, nonce), max(20, n // 20))))

    policy = Policy.strict()
    policy.allow_simulated = True
    trust = TrustStore.default().with_simulated(d / "sim-tee" / "roots.pem")
    doc = json.loads(json.dumps(svc.endorsements_document()))
    resp = RawResponse(200, signer.sign(200, body, rid), body)
    assert verify_response(resp, doc, policy=policy, trust=trust).ok
    verify_us = per_op_us(lambda: verify_response(resp, doc, policy=policy, trust=trust), max(20, n // 20))

    print(f"result body {len(body)} bytes; RSA-4096 keygen at first start {keygen_s:.2f} s; n={n}")
    print(f"baseline 1: serialise result JSON            {base_json:10.1f} us")
    print(f"baseline 2: serve it via Flask (test client)  {base_http:10.1f} us")
    print(f"served + signed (ed25519, key binding)        {signed_http:10.1f} us  "
          f"(+{(signed_http - base_http) / base_http * 100:.1f}% over baseline 2)")
    print(f"{'per-result cost':44s} {'us':>10s} {'x JSON':>9s} {'% of served':>12s}")
    for name, us in rows:
        print(f"{name:44s} {us:10.1f} {us / base_json:9.1f} {us / base_http * 100:11.1f}%")
    print(f"{'client verify (key binding, sim-snp)':44s} {verify_us:10.1f} {verify_us / base_json:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
