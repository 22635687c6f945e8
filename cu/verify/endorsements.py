"""The node's endorsement document (aocu-endorsements/1): its keys, epoch, node config and key-binding
evidence, checked for internal consistency before any response is compared with it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field

from attestation.binding import key_binding_report_data
from attestation.errors import ParseError
from attestation.evidence import Evidence
from attestation.snp import parse_report
from attestation.tdx import parse_quote
from cu.codec.hashes import b64url
from cu.wire.response import DOCUMENT_FORMAT, TEE_LABELS, canonical_json


def b64url_strict(text: object, what: str) -> bytes:
    """Unpadded base64url `text`, else ValueError naming `what`."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError(f"{what} must be unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} must be unpadded base64url") from None


@dataclass
class EndorsedNode:
    tee: str
    address: str
    n: bytes
    ed25519_pub: bytes
    epoch: int
    node_config: dict
    node_config_sha256: bytes
    evidence: Evidence | None
    no_evidence: str | None = None
    # keys the node used before (document `keys`, status "past"): same wallet and tee, their own ed25519 key,
    # epoch, config and key-binding evidence, so results signed before a rotation keep verifying
    past: list[EndorsedNode] = field(default_factory=list)
    retired_at: int | None = None

    @classmethod
    def from_document(cls, doc: dict) -> EndorsedNode:
        """ValueError naming the problem; checks the document's internal consistency."""
        if not isinstance(doc, dict) or doc.get("format") != DOCUMENT_FORMAT:
            raise ValueError(f"not an endorsement document (format must be {DOCUMENT_FORMAT!r})")
        tee = doc.get("tee")
        if tee not in TEE_LABELS:
            raise ValueError(f"tee {tee!r} is not one of {TEE_LABELS}")
        node = doc.get("node")
        if not isinstance(node, dict):
            raise ValueError("node: missing")
        n = b64url_strict(node.get("wallet_n"), "node.wallet_n")
        if not 512 <= len(n) <= 1024:
            raise ValueError("node.wallet_n must be a 4096..8192-bit RSA modulus")
        ed = b64url_strict(node.get("ed25519"), "node.ed25519")
        if len(ed) != 32:
            raise ValueError("node.ed25519 must be a 32-byte public key")
        address = node.get("address")
        if address != b64url(hashlib.sha256(n).digest()):
            raise ValueError("node.address is not base64url(sha256(wallet_n))")
        epoch = node.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 1 << 64:
            raise ValueError("node.epoch must be a u64")
        cfg = node.get("node_config")
        if not isinstance(cfg, dict):
            raise ValueError("node.node_config must be an object")
        cfg_sha = hashlib.sha256(canonical_json(cfg)).digest()
        if node.get("node_config_sha256") != cfg_sha.hex():
            raise ValueError("node.node_config_sha256 is not SHA-256 of the canonical node_config")
        if cfg.get("tee") not in ((tee, "sim") if tee.startswith("sim-") else (tee,)):
            raise ValueError(f"node_config.tee {cfg.get('tee')!r} contradicts tee {tee!r}")
        ev_obj = doc.get("evidence")
        evidence = None
        if tee == "none":
            if ev_obj is not None:
                raise ValueError("tee none with evidence")
        else:
            try:
                evidence = Evidence.from_json(ev_obj)
            except ParseError as exc:
                raise ValueError(f"evidence: {exc}") from None
            if evidence.tee != tee:
                raise ValueError(f"evidence bundle labelled {evidence.tee!r}, document says {tee!r}")
        no_ev = doc.get("no_evidence")
        past = [] if doc.get("keys") is None else _past_keys(doc, node)
        return cls(tee, address, n, ed, epoch, cfg, cfg_sha, evidence, no_ev if isinstance(no_ev, str) else None,
                   past)

    def for_signer(self, signer: tuple[str, bytes] | None, epoch: int | None) -> EndorsedNode:
        """The past key the signer and epoch of a response name (a result signed before a rotation), else self
        (whose checks then report any mismatch)."""
        if signer is None or (epoch == self.epoch and (signer[0] != "ed25519" or signer[1] == self.ed25519_pub)):
            return self
        for p in self.past:
            if p.epoch == epoch and (signer[0] != "ed25519" or signer[1] == p.ed25519_pub):
                return p
        return self

    def key_report_data(self) -> bytes:
        return key_binding_report_data(self.n, self.ed25519_pub, self.epoch, self.node_config_sha256)


def _past_keys(doc: dict, node: dict) -> list[EndorsedNode]:
    keys = doc.get("keys")
    if not isinstance(keys, list):
        raise ValueError("keys must be a list")
    out = []
    for i, k in enumerate(keys):
        if not isinstance(k, dict):
            raise ValueError(f"keys[{i}] must be an object")
        if k.get("status") != "past" or k.get("tee", doc.get("tee")) != doc.get("tee"):
            continue  # the current key is `node`; keys of another TEE mode cannot sign this node's results
        sub = {"format": DOCUMENT_FORMAT, "tee": doc.get("tee"), "evidence": k.get("evidence"),
               "node": {"address": node.get("address"), "wallet_n": node.get("wallet_n"),
                        **{f: k.get(f) for f in ("ed25519", "epoch", "node_config", "node_config_sha256")}}}
        if doc.get("tee") != "none" and sub["evidence"] is None:
            continue  # a past key without evidence binds nothing
        try:
            p = EndorsedNode.from_document(sub)
        except ValueError as exc:
            raise ValueError(f"keys[{i}] (past key): {exc}") from None
        p.retired_at = k.get("retired_at") if isinstance(k.get("retired_at"), int) else None
        out.append(p)
    return out


def report_data_of(kind: str, raw: bytes) -> bytes:
    """REPORT_DATA of an SNP report or TDX quote (ParseError if it is neither)."""
    return parse_report(raw).report_data if kind == "snp" else parse_quote(raw).body.report_data
