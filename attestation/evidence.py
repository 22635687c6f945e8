"""Evidence bundles and kind detection; `verify_evidence` dispatches to the SNP or TDX verifier.

Bundle (JSON, what `aocu attest -o FILE` writes and the node's attestation route serves):
  {"format": "aocu-evidence/1", "kind": "snp"|"tdx", "tee": "snp"|"tdx"|"sim-snp"|"sim-tdx",
   "evidence": "<base64 report or quote>",
   "endorsements": {"vcek": b64 DER, "chain": b64 PEM, "cert_table": b64,
                    "collateral": {"tcb_info": b64, "tcb_info_issuer_chain": b64, ...}}}
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass, field

from .collateral import COLLATERAL_KEYS
from .errors import MAX_INPUT_BYTES, ParseError
from .policy import Policy
from .result import VerificationReport
from .snp import REPORT_SIZE, SUPPORTED_VERSIONS
from .tdx import looks_like_quote
from .trust import TrustStore

BUNDLE_FORMAT = "aocu-evidence/1"
SNP_ENDORSEMENTS = ("vcek", "chain", "cert_table", "crl")


@dataclass
class Evidence:
    kind: str  # 'snp' | 'tdx'
    tee: str  # 'snp' | 'tdx' | 'sim-snp' | 'sim-tdx'
    raw: bytes
    endorsements: dict = field(
        default_factory=dict
    )  # SNP: vcek/chain/cert_table/crl bytes; TDX: collateral dict

    @property
    def simulated(self) -> bool:
        return self.tee.startswith("sim-")

    def to_json(self) -> dict:
        enc = lambda b: base64.b64encode(b).decode()  # noqa: E731
        endo: dict = {}
        for k, v in self.endorsements.items():
            if k == "collateral":
                endo[k] = {ck: enc(cv) for ck, cv in v.items()}
            else:
                endo[k] = enc(v)
        return {
            "format": BUNDLE_FORMAT,
            "kind": self.kind,
            "tee": self.tee,
            "evidence": enc(self.raw),
            "endorsements": endo,
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=1).encode() + b"\n"

    @classmethod
    def from_json(cls, obj: object) -> Evidence:
        if not isinstance(obj, dict) or obj.get("format") != BUNDLE_FORMAT:
            raise ParseError(f"not an evidence bundle (expected format {BUNDLE_FORMAT!r})")
        kind, tee = obj.get("kind"), obj.get("tee")
        if (
            kind not in ("snp", "tdx")
            or tee not in ("snp", "tdx", "sim-snp", "sim-tdx")
            or not tee.endswith(kind)
        ):
            raise ParseError(f"evidence bundle: bad kind/tee {kind!r}/{tee!r}")
        raw = _b64(obj.get("evidence"), "evidence")
        endo_in = obj.get("endorsements") or {}
        if not isinstance(endo_in, dict):
            raise ParseError("evidence bundle: endorsements must be an object")
        endo: dict = {}
        for k, v in endo_in.items():
            if kind == "tdx" and k == "collateral":
                if not isinstance(v, dict):
                    raise ParseError("evidence bundle: collateral must be an object")
                endo[k] = {ck: _b64(cv, f"collateral.{ck}") for ck, cv in v.items() if ck in COLLATERAL_KEYS}
            elif kind == "snp" and k in SNP_ENDORSEMENTS:
                endo[k] = _b64(v, k)
            else:
                raise ParseError(f"evidence bundle: unknown endorsement {k!r} for {kind}")
        return cls(kind, tee, raw, endo)


def _b64(v: object, what: str) -> bytes:
    if not isinstance(v, str):
        raise ParseError(f"evidence bundle: {what} must be base64 text")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise ParseError(f"evidence bundle: {what} is not valid base64") from None


def load_evidence(blob: bytes) -> Evidence:
    """Accept a JSON bundle, a raw binary report/quote, or its hex text. Raises ParseError."""
    if len(blob) > MAX_INPUT_BYTES:
        raise ParseError(f"evidence larger than {MAX_INPUT_BYTES} bytes")
    stripped = blob.strip()
    if stripped.startswith(b"{"):
        try:
            obj = json.loads(stripped)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ParseError(f"evidence looks like JSON but does not parse: {exc}") from None
        return Evidence.from_json(obj)
    raw = blob
    if stripped and all(c in b"0123456789abcdefABCDEF \r\n\t" for c in stripped):
        try:
            raw = bytes.fromhex(stripped.decode())
        except ValueError:
            raise ParseError("evidence looks like hex text but does not decode") from None
    kind = detect_kind(raw)
    return Evidence(kind, kind, raw, {})


def detect_kind(raw: bytes) -> str:
    if looks_like_quote(raw):
        return "tdx"
    if len(raw) in (REPORT_SIZE, REPORT_SIZE + 0x20):
        off = 0x20 if len(raw) == REPORT_SIZE + 0x20 else 0
        if int.from_bytes(raw[off : off + 4], "little") in SUPPORTED_VERSIONS:
            return "snp"
        raise ParseError(
            f"{len(raw)}-byte input has SNP report size but version {int.from_bytes(raw[off : off + 4], 'little')} "
            "is not supported (2, 3, 4, 5)"
        )
    if len(raw) >= 2 and int.from_bytes(raw[:2], "little") in (4, 5):
        raise ParseError("input starts like a TDX quote but the key type / TEE type are not ECDSA-P256 / TDX")
    raise ParseError(
        f"unrecognised evidence ({len(raw)} bytes): neither a {REPORT_SIZE}-byte SNP report nor a TDX v4/v5 quote"
    )


def verify_evidence(
    blob: bytes | Evidence,
    *,
    policy: Policy | None = None,
    at: dt.datetime | None = None,
    trust: TrustStore | None = None,
    vcek: bytes | None = None,
    chain: bytes | None = None,
    cert_table: bytes | None = None,
    crl: bytes | None = None,
    collateral: dict[str, bytes] | None = None,
    product: str | None = None,
) -> VerificationReport:
    """Detect the kind (bundle, SNP report, TDX quote) and verify. Explicit endorsements override the bundle's."""
    from .verify_snp import verify_snp
    from .verify_tdx import verify_tdx

    try:
        ev = blob if isinstance(blob, Evidence) else load_evidence(blob)
    except ParseError as exc:
        rep = VerificationReport(kind="unknown")
        rep.add("evidence.parse", False, str(exc))
        return rep
    e = ev.endorsements
    if ev.kind == "snp":
        rep = verify_snp(
            ev.raw,
            vcek=vcek if vcek is not None else e.get("vcek"),
            chain=chain if chain is not None else e.get("chain"),
            cert_table=cert_table if cert_table is not None else e.get("cert_table"),
            crl=crl if crl is not None else e.get("crl"),
            policy=policy,
            at=at,
            trust=trust,
            product=product,
        )
    else:
        rep = verify_tdx(
            ev.raw,
            collateral=collateral if collateral is not None else e.get("collateral"),
            policy=policy,
            at=at,
            trust=trust,
        )
    if ev.simulated and not rep.simulated:
        # the bundle says simulated but the chain did not: never let a label upgrade or downgrade trust silently
        rep.add("evidence.label", False, _label_mismatch(ev.tee, rep))
    return rep


# The checks (named by verify_snp / verify_tdx) that take the signing certificate up to a pinned root, root first.
_CHAIN_CHECKS = {
    "snp": ("snp.ark_pinned", "snp.ark_self_signature", "snp.ask_signature", "snp.vcek_chain"),
    "tdx": (
        "tdx.pck_chain.root_pinned",
        "tdx.pck_chain.root_signature",
        "tdx.pck_chain.intermediate_signature",
        "tdx.pck_chain.leaf_signature",
    ),
}


def _label_mismatch(tee: str, rep: VerificationReport) -> str:
    """Why a bundle labelled simulated was not verified as simulated, claiming only what the report establishes:
    a hardware root only when the chain verified up to it."""
    names = _CHAIN_CHECKS.get(rep.kind, ())
    chain = [rep.check(n) for n in names]
    if chain and all(c is not None and c.ok for c in chain):
        return f"bundle labelled {tee!r} but the evidence chains to a hardware root"
    if not chain or chain[0] is None:
        failed = rep.failed()
        stop = failed[-1].name if failed else None
        if stop == f"{rep.kind}.internal_error":  # the verifier's own checks are lost: nothing is known
            return f"bundle labelled {tee!r}; verification aborted ({stop}) without a result for the evidence's chain"
        at = f" at check {stop}" if stop else ""
        return f"bundle labelled {tee!r}; verification stopped{at} before the evidence's chain was evaluated"
    name, check = next((n, c) for n, c in zip(names, chain, strict=True) if c is None or not c.ok)
    return (
        f"bundle labelled {tee!r}; the evidence's chain names a hardware root but was not verified up to it "
        + (f"(check {name} failed)" if check is not None else f"(verification stopped before check {name})")
    )
