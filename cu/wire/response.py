"""The signed, attested result as it travels: shared by the signer (cu.node.signer, cu.node.evidence_service)
and the verifier (cu.verify). See docs/WIRE-FORMAT.md.

  Content-Digest: sha-256=:<b64 SHA-256(body)>:                               (RFC 9530)
  Ao-Process: <pid>   Ao-Slot: <n>   Ao-Message: <id>                         (those that identify the result)
  Attestation: tee="sim-snp", binding="key", kind="snp", epoch=0, evidence=:<b64 report/quote>:
               (fresh: binding="fresh", ..., nonce=:<b64>:, evidence=...; no TEE: tee="none")
  Signature-Input: aocu=("@status" "content-digest" "ao-process" ... "attestation");created=T;keyid="K";alg="A"
  Signature: aocu=:<b64>:                                                      (RFC 9421)
  keyid: the ed25519 public key (b64url, alg ed25519) or the wallet address (alg rsa-pss-sha512).
  ANS-104 form (accept-codec: ans104@1.0): body = item signed by the wallet, data = the result, tags
  Content-Type, Ao-Status, Ao-Process/Ao-Slot/Ao-Message, Attestation (same value as the header).
Endorsements: `GET /~attestation@1.0/evidence`, a JSON document of format aocu-endorsements/1 whose
node_config_sha256 is SHA-256 of canonical_json(node_config).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import http_sfv

from cu.codec import sf
from cu.codec.errors import CodecError
from cu.codec.tags import TagLimits

SIGNATURE_LABEL = "aocu"
IDENTITY_HEADERS = ("Ao-Process", "Ao-Slot", "Ao-Message")
ATTESTATION_TAG = "Attestation"  # the header, and the ANS-104 tag, carrying the evidence
STATUS_TAG = "Ao-Status"
ANS104_CONTENT_TYPE = "application/ans104"
ANS104_CODEC = "ans104@1.0"  # accept-codec value asking for the ANS-104 form; Codec-Device of the answer
DOCUMENT_FORMAT = "aocu-endorsements/1"
EVIDENCE_PATH = "/~attestation@1.0/evidence"
TEE_LABELS = ("snp", "tdx", "sim-snp", "sim-tdx", "none")
# A TDX quote (~4-5 KB with its PCK chain) exceeds arbundles' 4096-byte tag block; result items allow 64 KiB.
ANS104_LIMITS = TagLimits(max_tag_bytes=1 << 16, max_value=1 << 16)
_ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,256}")


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, ASCII: node_config_sha256 = SHA-256 of these bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def check_identity_value(name: str, value: str) -> str:
    """`value` if it may be an Ao-Process / Ao-Slot / Ao-Message value, else ValueError naming `name`."""
    if not _ID_RE.fullmatch(value):
        raise ValueError(f"{name} {value!r}: result identities are 1..256 characters of [A-Za-z0-9_.:-]")
    return value


def attestation_header(
    tee: str,
    *,
    binding: str | None = None,
    kind: str | None = None,
    evidence: bytes | None = None,
    epoch: int | None = None,
    nonce: bytes | None = None,
) -> str:
    """`tee="sim-snp", binding="key", kind="snp", epoch=0, evidence=:...:` (+ `nonce=:...:` when fresh);
    just `tee="none"` without a TEE."""
    if tee not in TEE_LABELS:
        raise ValueError(f"tee must be one of {TEE_LABELS}")
    parts = [f"tee={sf.ser_string(tee)}"]
    if tee != "none":
        if binding not in ("key", "fresh") or kind not in ("snp", "tdx") or evidence is None or epoch is None:
            raise ValueError("evidence headers need binding (key|fresh), kind, epoch and the evidence bytes")
        if (binding == "fresh") != (nonce is not None):
            raise ValueError("a nonce goes with fresh binding, and only there")
        parts += [f"binding={sf.ser_string(binding)}", f"kind={sf.ser_string(kind)}", f"epoch={int(epoch)}"]
        if nonce is not None:
            parts.append(f"nonce={sf.ser_bare(bytes(nonce))}")
        parts.append(f"evidence={sf.ser_bare(bytes(evidence))}")
    return ", ".join(parts)


@dataclass
class AttestationInfo:
    tee: str
    binding: str | None = None
    kind: str | None = None
    epoch: int | None = None
    nonce: bytes | None = None
    evidence: bytes | None = None


def parse_attestation_header(value: str) -> AttestationInfo:
    """ValueError (with the reason) for anything but the form attestation_header() writes."""
    try:
        d = sf.parse_dictionary(value, "attestation")
    except CodecError as exc:
        raise ValueError(str(exc)) from None

    def member(name: str, typ: type) -> Any:
        if name not in d:
            return None
        v = d[name]
        if not isinstance(v, http_sfv.Item) or not isinstance(v.value, typ) or isinstance(v.value, bool):
            raise ValueError(f"attestation: member {name} must be a {typ.__name__}")
        return v.value

    tee = member("tee", str)
    if tee not in TEE_LABELS:
        raise ValueError(f"attestation: tee {tee!r} is not one of {TEE_LABELS}")
    info = AttestationInfo(tee, member("binding", str), member("kind", str), member("epoch", int),
                           member("nonce", bytes), member("evidence", bytes))
    if tee == "none":
        if any(x is not None for x in (info.binding, info.kind, info.epoch, info.nonce, info.evidence)):
            raise ValueError('attestation: tee="none" carries no evidence members')
        return info
    if info.binding not in ("key", "fresh"):
        raise ValueError(f"attestation: binding {info.binding!r} must be 'key' or 'fresh'")
    if info.kind not in ("snp", "tdx") or not tee.endswith(info.kind):
        raise ValueError(f"attestation: kind {info.kind!r} does not match tee {tee!r}")
    if info.evidence is None or info.epoch is None or info.epoch < 0:
        raise ValueError("attestation: evidence and epoch are required")
    if (info.binding == "fresh") != (info.nonce is not None):
        raise ValueError("attestation: a nonce is present exactly when the binding is fresh")
    return info


__all__ = ["ANS104_CODEC", "ANS104_CONTENT_TYPE", "ANS104_LIMITS", "ATTESTATION_TAG", "DOCUMENT_FORMAT",
           "EVIDENCE_PATH", "IDENTITY_HEADERS", "SIGNATURE_LABEL", "STATUS_TAG", "TEE_LABELS", "AttestationInfo",
           "attestation_header", "canonical_json", "check_identity_value", "parse_attestation_header"]
