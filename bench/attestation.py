"""Attestation verification speed: SNP report with a warm chain cache, TDX quote; baselines in the same run.

    python bench/attestation.py [--n N]

Baselines: the same verification with the certificate caches cleared before every call (cold chain: every
certificate re-parsed and every RSA-4096 PSS / P-256 chain signature re-verified). Ratio = cold / warm.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attestation import Policy, chaincache, verify_snp, verify_tdx  # noqa: E402
from attestation.collateral import load_collateral_dir  # noqa: E402

VECTORS = Path(os.environ.get("AOCU_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "vectors"
SNP_AT = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
TDX_AT = dt.datetime(2023, 7, 1, 1, tzinfo=dt.UTC)


def per_op_us(fn, n: int, *, cold: bool) -> float:  # noqa: ANN001
    fn()  # warm caches (or just imports, for the cold run)
    total = 0.0
    for _ in range(n):
        if cold:
            chaincache.clear()
        t0 = time.perf_counter()
        rep = fn()
        total += time.perf_counter() - t0
        assert rep.ok, rep.format_text()
    return total / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    n = ap.parse_args().n
    sev, tdx = VECTORS / "sev", VECTORS / "tdx"
    report = bytes.fromhex((sev / "virtee_report_milan.hex").read_text())
    vcek = (sev / "virtee_vcek_milan.der").read_bytes()
    chain = (sev / "virtee_cert_chain_milan.pem").read_bytes()
    quote = (tdx / "gotdxguest_tdx_prod_quote_SPR_E4.dat").read_bytes()
    pol_tdx = Policy.from_json({"tdx": {"accepted_tcb_status": ["NotEvaluated"]}})
    col = load_collateral_dir(tdx, bytes.fromhex("50806f000000"))
    # The SPR vector's platform TCB matches no level (INDEX 2.1): measure collateral evaluation on it anyway and
    # accept the outcome, by verifying with a policy whose only failure is expected.

    def snp() -> object:
        return verify_snp(report, vcek=vcek, chain=chain, at=SNP_AT)

    def tdx_q() -> object:
        return verify_tdx(quote, at=TDX_AT, policy=pol_tdx)

    class _Ok:
        def __init__(self, rep: object) -> None:
            self.rep = rep
            self.ok = [c.name for c in rep.failed()] == ["tdx.tcb.platform_level", "tdx.tcb.status"]  # type: ignore[attr-defined]

        def format_text(self) -> str:
            return self.rep.format_text()  # type: ignore[attr-defined]

    def tdx_col() -> object:
        return _Ok(verify_tdx(quote, at=TDX_AT, collateral=col))

    rows = []
    for name, fn in (
        ("snp verify (Milan v2, VCEK+chain)", snp),
        ("tdx verify (v4 quote, no collateral)", tdx_q),
        ("tdx verify (v4 quote + tcbInfo/QE id/CRLs)", tdx_col),
    ):
        warm = per_op_us(fn, n, cold=False)
        cold = per_op_us(fn, max(n // 3, 10), cold=True)
        rows.append((name, warm, cold))
    print(f"{'operation':46s} {'warm us/op':>11s} {'cold-chain us/op (baseline)':>28s} {'ratio':>7s}")
    for name, warm, cold in rows:
        print(f"{name:46s} {warm:11.0f} {cold:28.0f} {cold / warm:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
