"""Attestation evidence for SEV-SNP and TDX: providers, parsers, verification, policy.

Standalone: depends only on `cryptography` and the standard library (never on cu.*), so clients can verify
without the server. Public API:

    verify_snp(report, *, vcek, chain, cert_table, crl, policy, at, trust, product) -> VerificationReport
    verify_tdx(quote, *, collateral, policy, at, trust) -> VerificationReport
    verify_evidence(blob_or_Evidence, ...) -> VerificationReport        (detects the kind)
    Policy.from_file / Policy.from_json, TrustStore.default().with_simulated(root)
    providers.get_provider(kind, data_dir).get_evidence(report_data64) -> Evidence

Evidence only: signed, attested results are cu.wire.response (wire format) and cu.verify (`aocu verify`), built
on this package. `attestation.sim` (the simulated TEE) is simulation support for `--tee sim` and tests.
"""

from .errors import AttestationError, NotAvailable, ParseError, PolicyError, ProviderError
from .evidence import Evidence, load_evidence, verify_evidence
from .policy import Policy, SnpPolicy, TdxPolicy
from .result import Check, VerificationReport
from .trust import PINNED_SPKI, TrustStore
from .verify_snp import verify_snp
from .verify_tdx import verify_tdx

__all__ = [
    "AttestationError",
    "Check",
    "Evidence",
    "NotAvailable",
    "PINNED_SPKI",
    "ParseError",
    "Policy",
    "PolicyError",
    "ProviderError",
    "SnpPolicy",
    "TdxPolicy",
    "TrustStore",
    "VerificationReport",
    "load_evidence",
    "verify_evidence",
    "verify_snp",
    "verify_tdx",
]
