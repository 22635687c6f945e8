"""Intel PCS collateral: TCB info and QE identity documents (signed over the exact bytes served), CRLs.

A collateral set is a dict with any of these keys (bytes values):
  tcb_info, tcb_info_issuer_chain, qe_identity, qe_identity_issuer_chain, pck_crl, pck_crl_issuer_chain, root_crl
`load_collateral_dir` builds one from a directory by looking at file contents, not names.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from json.decoder import scanstring
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .certs import cn, load_any
from .errors import MAX_INPUT_BYTES, ParseError

COLLATERAL_KEYS = (
    "tcb_info",
    "tcb_info_issuer_chain",
    "qe_identity",
    "qe_identity_issuer_chain",
    "pck_crl",
    "pck_crl_issuer_chain",
    "root_crl",
)
_WS = " \t\r\n"


def split_signed_json(body: bytes, member: str) -> tuple[bytes, dict, bytes]:
    """Return (exact bytes of body[member], parsed member, signature) for a PCS `{member: {...}, "signature": hex}`.

    The signature covers the member's bytes exactly as served, so they are sliced out, never re-serialised.
    Duplicate top-level keys are refused (two `tcbInfo` values could make the signed and parsed value differ).
    """
    if len(body) > MAX_INPUT_BYTES:
        raise ParseError(f"collateral larger than {MAX_INPUT_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("collateral is not UTF-8") from None
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int, object]] = {}
    try:
        pos = len(text) - len(text.lstrip(_WS))
        if text[pos : pos + 1] != "{":
            raise ParseError("collateral: expected a JSON object")
        pos += 1
        while True:
            while pos < len(text) and text[pos] in _WS:
                pos += 1
            if text[pos] == "}":
                pos += 1
                break
            if text[pos] != '"':
                raise ParseError("collateral: expected a key")
            key, pos = scanstring(text, pos + 1)
            while text[pos] in _WS:
                pos += 1
            if text[pos] != ":":
                raise ParseError("collateral: expected ':'")
            pos += 1
            while text[pos] in _WS:
                pos += 1
            value, end = decoder.raw_decode(text, pos)
            if key in spans:
                raise ParseError(f"collateral: duplicate key {key!r}")
            spans[key] = (pos, end, value)
            pos = end
            while text[pos] in _WS:
                pos += 1
            if text[pos] == ",":
                pos += 1
                continue
            if text[pos] == "}":
                pos += 1
                break
            raise ParseError("collateral: expected ',' or '}'")
        if text[pos:].strip(_WS):
            raise ParseError("collateral: trailing data after the JSON object")
    except (IndexError, json.JSONDecodeError, ValueError) as exc:
        if isinstance(exc, ParseError):
            raise
        raise ParseError(f"collateral: malformed JSON ({exc})") from None
    if member not in spans or "signature" not in spans:
        raise ParseError(f"collateral: expected keys {member!r} and 'signature'")
    start, end, value = spans[member]
    sig = spans["signature"][2]
    if not isinstance(value, dict) or not isinstance(sig, str):
        raise ParseError(f"collateral: {member!r} must be an object and 'signature' a hex string")
    try:
        sig_b = bytes.fromhex(sig)
    except ValueError:
        raise ParseError("collateral: signature is not hex") from None
    if len(sig_b) != 64:
        raise ParseError("collateral: signature must be 64 bytes (r || s)")
    return text[start:end].encode("utf-8"), value, sig_b


def verify_p256(key: object, sig_rs: bytes, data: bytes) -> bool:
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return False
    der_sig = encode_dss_signature(int.from_bytes(sig_rs[:32], "big"), int.from_bytes(sig_rs[32:], "big"))
    try:
        key.verify(der_sig, data, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def parse_time(value: object, what: str) -> dt.datetime:
    if not isinstance(value, str):
        raise ParseError(f"{what}: missing timestamp")
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ParseError(f"{what}: bad timestamp {value!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t


@dataclass(frozen=True)
class SignedDoc:
    signed: bytes
    value: dict
    signature: bytes


def load_crl(blob: bytes) -> x509.CertificateRevocationList:
    try:
        if blob.lstrip().startswith(b"-----"):
            return x509.load_pem_x509_crl(blob)
        if blob[:1] == b"0":  # DER SEQUENCE
            return x509.load_der_x509_crl(blob)
        # PCS can serve the PCK CRL hex-encoded
        return x509.load_der_x509_crl(bytes.fromhex(blob.decode("ascii").strip()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError(f"unparseable CRL: {exc}") from None


def load_collateral_dir(path: str | Path, fmspc: bytes | None = None) -> dict[str, bytes]:
    """Classify files in `path` by content: tcbInfo / enclaveIdentity JSON, issuer-chain PEMs, CRLs.

    When several TCB-info documents exist the one for `fmspc` is chosen. Unrelated files are ignored.
    """
    out: dict[str, bytes] = {}
    tcb_candidates: list[bytes] = []
    for f in sorted(Path(path).iterdir()):
        if not f.is_file() or f.stat().st_size > MAX_INPUT_BYTES:
            continue
        data = f.read_bytes()
        stripped = data.lstrip()
        if stripped.startswith(b"{"):
            if b'"tcbInfo"' in data:
                tcb_candidates.append(data)
            elif b'"enclaveIdentity"' in data:
                out["qe_identity"] = data
            continue
        if b"-----BEGIN CERTIFICATE-----" in data:
            try:
                certs = load_any(data)
            except ParseError:
                continue
            leaf = cn(certs[0].subject)
            if leaf == "Intel SGX TCB Signing" or leaf.endswith("SGX TCB Signing"):
                out.setdefault("tcb_info_issuer_chain", data)
                out.setdefault("qe_identity_issuer_chain", data)
            elif "PCK" in leaf and "CA" in leaf:
                out["pck_crl_issuer_chain"] = data
            continue
        try:
            crl = load_crl(data)
        except ParseError:
            continue
        if cn(crl.issuer).endswith("Root CA"):
            out["root_crl"] = data
        else:
            out["pck_crl"] = data
    chosen = None
    for cand in tcb_candidates:
        try:
            _, value, _ = split_signed_json(cand, "tcbInfo")
        except ParseError:
            continue
        if fmspc is None or str(value.get("fmspc", "")).lower() == fmspc.hex():
            chosen = cand
            break
    if chosen is None and tcb_candidates:
        chosen = tcb_candidates[0]
    if chosen is not None:
        out["tcb_info"] = chosen
    return out
