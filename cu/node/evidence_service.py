"""Attestation evidence for the node: key-binding evidence (at start and on rotation, cached) and fresh
per-request evidence, plus the endorsement document of `GET /~attestation@1.0/evidence`.

REPORT_DATA formulas are attestation.binding's (docs/WIRE-FORMAT.md, REPORT_DATA bindings). With tee
`none` there is no evidence: the document and every response say so, nothing is faked.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from attestation.binding import fresh_report_data, key_binding_report_data
from attestation.errors import AttestationError
from attestation.evidence import Evidence
from attestation.providers import Provider
from cu.hashing import b64url
from cu.node.identity import NodeIdentity
from cu.node.keys import KeyHistory
from cu.wire.response import DOCUMENT_FORMAT

TEE_LABELS = ("snp", "tdx", "sim-snp", "sim-tdx", "none")
MAX_NONCE = 64
KEY_BINDING = 'SHA-512("aocu/key-binding/v1" 0x00 || n || ed25519_pub || epoch_u64_be || node_config_sha256)'
FRESH_BINDING = 'SHA-512("aocu/result/v1" 0x00 || content_digest || nonce)'
DOC_NONCE_BINDING = (
    "fresh binding with content_digest = SHA-256(key-binding REPORT_DATA): proves the bound keys are live now"
)


class NoEvidence(AttestationError):
    """The node has no TEE (tee none): there is no evidence to give."""


class EvidenceError(AttestationError):
    """The TEE failed to produce evidence."""


def parse_nonce(text: str) -> bytes:
    """`attest-nonce` / `nonce` query values: hex, 1..64 bytes. ValueError with a clear message otherwise."""
    t = text.strip()
    if not t or len(t) % 2 or len(t) > 2 * MAX_NONCE:
        raise ValueError(f"nonce must be 1..{MAX_NONCE} bytes of hex (an even number of hex digits)")
    try:
        return bytes.fromhex(t)
    except ValueError:
        raise ValueError("nonce must be hex") from None


class EvidenceService:
    """Holds the key-binding evidence of `identity` (produced now and at every rotation)."""

    def __init__(self, provider: Provider, identity: NodeIdentity) -> None:
        self.provider = provider
        self.identity = identity
        tee = getattr(provider, "tee", "none")
        if tee not in TEE_LABELS:
            raise ValueError(f"provider tee label {tee!r} is not one of {TEE_LABELS}")
        self.tee: str = tee
        self.no_evidence_reason: str | None = None
        if tee == "none":
            why = getattr(provider, "reason", None) or "no TEE (tee none)"
            self.no_evidence_reason = f"{why}: this node produces no attestation evidence; results are signed, not attested"
        self._lock = threading.Lock()
        self._key_evidence: Evidence | None = None
        self._key_report_data: bytes = b""
        self._produced_at: float = 0.0
        self._bound: tuple[int, bytes] = (-1, b"")
        self.refresh()

    @property
    def has_tee(self) -> bool:
        return self.tee != "none"

    def key_report_data(self) -> bytes:
        i = self.identity
        return key_binding_report_data(i.n, i.ed25519_pub, i.epoch, i.node_config_sha256)

    def refresh(self) -> Evidence | None:
        """(Re)produce the key-binding evidence for the identity's current keys and epoch."""
        with self._lock:
            rd = self.key_report_data()
            ev = None if not self.has_tee else self._produce(rd)
            self._key_evidence, self._key_report_data, self._produced_at = ev, rd, time.time()
            self._bound = (self.identity.epoch, self.identity.ed25519_pub)
            if self.identity.data_dir is not None:
                # the key and its evidence join the history; a different earlier key becomes a past key
                KeyHistory(self.identity.data_dir).record_current(self._record(rd, ev))
            return ev

    def _record(self, rd: bytes, ev: Evidence | None) -> dict[str, Any]:
        i = self.identity
        return {"epoch": i.epoch, "ed25519": b64url(i.ed25519_pub), "address": i.address,
                "node_config": i.node_config, "node_config_sha256": i.node_config_sha256.hex(),
                "report_data": rd.hex(), "tee": self.tee, "evidence": ev.to_json() if ev is not None else None,
                "since": int(self._produced_at)}

    def keys(self) -> list[dict[str, Any]]:
        """The current key (with its evidence) first, then the past keys newest first, each with `status`."""
        self.key_evidence()  # re-bind first if the identity was rotated
        cur = {"status": "current", **self._record(self._key_report_data, self._key_evidence)}
        past = KeyHistory(self.identity.data_dir).past() if self.identity.data_dir is not None else []
        return [cur, *({"status": "past", **p} for p in reversed(past))]

    def rotate(self) -> int:
        """New ed25519 key + epoch, then evidence for them."""
        epoch = self.identity.rotate()
        self.refresh()
        return epoch

    def key_evidence(self) -> Evidence | None:
        """The cached key-binding evidence (None with tee none); re-produced if the identity changed."""
        ev = self._key_evidence
        if self.has_tee and self._bound != (self.identity.epoch, self.identity.ed25519_pub):
            ev = self.refresh()  # the identity was rotated behind our back
        return ev

    @property
    def epoch(self) -> int:
        return self.identity.epoch

    def fresh(self, content_digest: bytes, nonce: bytes) -> Evidence:
        """Evidence with REPORT_DATA = fresh_report_data(content_digest, nonce) (per `?attest-nonce=`)."""
        if len(content_digest) != 32:
            raise ValueError("content_digest is the 32-byte SHA-256 of the result")
        if not 1 <= len(nonce) <= MAX_NONCE:
            raise ValueError(f"nonce must be 1..{MAX_NONCE} bytes")
        if not self.has_tee:
            raise NoEvidence(self.no_evidence_reason or "no TEE: no fresh evidence")
        return self._produce(fresh_report_data(content_digest, nonce))

    def _produce(self, report_data: bytes) -> Evidence:
        try:
            return self.provider.get_evidence(report_data)
        except AttestationError as exc:
            raise EvidenceError(f"{self.tee} evidence could not be produced: {exc}") from exc

    def endorsements_document(self, nonce: bytes | None = None) -> dict[str, Any]:
        """The JSON of `GET /~attestation@1.0/evidence[?nonce=HEX]`: evidence bundle with its endorsements
        (certificates / collateral), the node's public keys, epoch and config, and the binding formulas."""
        ev = self.key_evidence()
        doc: dict[str, Any] = {
            "format": DOCUMENT_FORMAT,
            "tee": self.tee,
            "node": self.identity.public_info(),
            "binding": {
                "kind": "key",
                "report_data": self._key_report_data.hex(),
                "formula": KEY_BINDING,
                "fresh_formula": FRESH_BINDING,
            },
            "produced_at": int(self._produced_at),
            "keys": self.keys(),
        }
        if ev is None:
            doc["evidence"] = None
            doc["no_evidence"] = self.no_evidence_reason
        else:
            doc["evidence"] = ev.to_json()
        if nonce is not None:
            if not 1 <= len(nonce) <= MAX_NONCE:
                raise ValueError(f"nonce must be 1..{MAX_NONCE} bytes")
            doc["nonce"] = nonce.hex()
            if ev is not None:
                rd = fresh_report_data(hashlib.sha256(self._key_report_data).digest(), nonce)
                doc["nonce_evidence"] = {"binding": DOC_NONCE_BINDING, "report_data": rd.hex(),
                                         "evidence": self._produce(rd).to_json()}
        return doc
