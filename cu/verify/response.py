"""Verification of signed, attested node results (the library behind `aocu verify`).

The wire format is cu.wire.response's (producer: cu.node.signer / cu.node.evidence_service).
  Key binding: REPORT_DATA = SHA-512("aocu/key-binding/v1" 0 || n || ed25519_pub || epoch_be64 || config_sha256);
  fresh binding: REPORT_DATA = SHA-512("aocu/result/v1" 0 || SHA-256(result bytes) || nonce), where the result
  bytes are the HTTP body (or the item's data for ANS-104).
Endorsements (certificates / collateral, public keys, epoch and node config) come from the node's
`GET /~attestation@1.0/evidence` (format aocu-endorsements/1). Every check is reported by name; the result
verifies only if all pass. Evidence is verified by `attestation`; signatures by cu.codec. Nothing here (or
below) imports the native extension: clients verify without the C++ build.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from attestation.binding import fresh_report_data, report_data_matches
from attestation.errors import ParseError
from attestation.evidence import Evidence, verify_evidence
from attestation.policy import Policy
from attestation.result import Check
from attestation.trust import TrustStore
from cu.codec import rfc9421
from cu.codec.ans104 import DataItem
from cu.codec.digest import verify_content_digest
from cu.codec.errors import CodecError
from cu.codec.wallet import rsa_public_key
from cu.verify.endorsements import EndorsedNode, b64url, b64url_strict, report_data_of
from cu.verify.transport import RawResponse
from cu.wire.response import (
    ANS104_CODEC,
    ANS104_CONTENT_TYPE,
    ANS104_LIMITS,
    ATTESTATION_TAG,
    IDENTITY_HEADERS,
    SIGNATURE_LABEL,
    STATUS_TAG,
    AttestationInfo,
    parse_attestation_header,
)


# -- the report ---------------------------------------------------------------------------------------
@dataclass
class ResponseReport:
    checks: list[Check] = field(default_factory=list)
    fields: dict = field(default_factory=dict)
    evidence_reports: dict[str, Any] = field(default_factory=dict)  # name -> VerificationReport
    payload: bytes | None = field(default=None, repr=False)  # the result bytes (body, or the item's data)

    @property
    def ok(self) -> bool:
        """Every check passed: the response is the endorsed node's signed, attested answer (whatever its status)."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def status(self) -> int | None:
        return self.fields.get("status")

    @property
    def status_ok(self) -> bool:
        """The answer is a success (2xx): a signed 404 verifies, but it is an error, not a result."""
        return self.status is not None and 200 <= self.status < 300

    def summary(self) -> dict:
        """What was verified, in short: status, the result's identity (as signed), and an excerpt of it."""
        return summarize(self.status, self.fields.get("result") or {}, self.payload)

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict:
        return {
            "verified": self.ok,
            "status": self.status,
            "summary": self.summary(),
            "checks": [c.to_dict() for c in self.checks],
            "failed": [c.name for c in self.failed()],
            "fields": self.fields,
            "evidence": {k: v.to_dict() for k, v in self.evidence_reports.items()},
        }

    def format_text(self, verbose: bool = False) -> str:
        """One line per check; the evidence verifier's failed sub-checks (all of them when verbose)."""
        lines = _summary_lines(self.summary())
        for c in self.checks:
            lines.append(f"{'PASS' if c.ok else 'FAIL'}  {c.name}" + (f": {c.detail}" if c.detail else ""))
            rep = self.evidence_reports.get(c.name)
            if rep is not None:
                for sub in (rep.checks if verbose else rep.failed()):
                    line = f"        {sub.mark.lower() if sub.ok else 'FAIL'}  {sub.name}" + (f": {sub.detail}" if sub.detail else "")
                    if not sub.ok and sub.relax:
                        line += f"  [to accept, relax policy key {sub.relax}]"
                    lines.append(line)
        verdict = "VERIFIED" if self.ok else "NOT VERIFIED"
        if self.fields.get("simulated"):
            verdict += " (SIMULATED TEE — not hardware evidence)"
        failed = self.failed()
        tail = f": failed {', '.join(c.name for c in failed)}" if failed else f": all {len(self.checks)} checks passed"
        if self.ok and not self.status_ok:
            tail += f" — but the node answered {_status_text(self.status)}: a signed error, not a result"
        lines.append(verdict + tail)
        return "\n".join(lines)


# -- summary ------------------------------------------------------------------------------------------
EXCERPT = 200
_RESULT_KEYS = ("Output", "Messages", "Spawns", "Assignments", "Error")


def _status_text(status: int | None) -> str:
    if status is None:
        return "no HTTP status"
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _excerpt(value: Any, limit: int = EXCERPT) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = " ".join(text.split()) if "\n" in text or "\r" in text else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _output_text(out: Any) -> Any:
    """AOS puts the printable output under Output.data; others return a string or a number's text."""
    if isinstance(out, dict) and "data" in out:
        return out["data"]
    return out


def summarize(status: int | None, ident: dict, payload: bytes | None) -> dict:
    """{status, reason, process?, message?, slot?, output?, error?, messages?, results?, body?}: the status, the
    identity the signature covers, and what the result says (an Output excerpt for a result body)."""
    out: dict[str, Any] = {"status": status, "reason": _status_text(status)}
    for key, header in (("process", "Ao-Process"), ("message", "Ao-Message"), ("slot", "Ao-Slot")):
        if ident.get(header) is not None:
            out[key] = ident[header]
    if not payload:
        return out
    doc: Any = None
    if payload[:1] in (b"{", b"["):
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            doc = None
    result = None
    if isinstance(doc, dict):
        result = doc.get("raw") if isinstance(doc.get("raw"), dict) else doc
        if not any(k in result for k in _RESULT_KEYS):
            result = None
    if result is not None:
        if "Output" in result:
            out["output"] = _excerpt(_output_text(result["Output"]))
        if result.get("Error") is not None:
            out["error"] = _excerpt(result["Error"])
        if isinstance(result.get("Messages"), list):
            out["messages"] = len(result["Messages"])
    elif isinstance(doc, dict) and isinstance(doc.get("edges"), list):
        out["results"] = len(doc["edges"])
    elif isinstance(doc, dict) and isinstance(doc.get("error"), str):
        out["error"] = _excerpt(doc["error"])
    elif isinstance(doc, dict) and isinstance(doc.get("message"), str):
        out["message_text"] = _excerpt(doc["message"])
    else:
        try:
            text = payload.decode("utf-8")
            printable = text.isprintable() or all(ch.isprintable() or ch in "\r\n\t" for ch in text[:4096])
        except UnicodeDecodeError:
            printable = False
        out["body"] = _excerpt(text) if printable else f"{len(payload)} bytes"
    return out


_LABELS = (("process", "process"), ("message", "message"), ("slot", "slot"), ("output", "output"),
           ("error", "error"), ("messages", "messages"), ("results", "results"), ("message_text", "says"),
           ("body", "body"))


def _summary_lines(summary: dict) -> list[str]:
    lines = [f"status    {summary['reason']}"]
    for key, label in _LABELS:
        if key in summary:
            lines.append(f"{label:<9} {summary[key]}")
    return lines


# -- verification -------------------------------------------------------------------------------------
def is_ans104(resp: RawResponse) -> bool:
    ct = (resp.header("content-type") or "").split(";")[0].strip().lower()
    return ct == ANS104_CONTENT_TYPE or (resp.header("codec-device") or "").strip().lower() == ANS104_CODEC


def verify_response(
    resp: RawResponse,
    document: dict | None,
    *,
    policy: Policy | None = None,
    trust: TrustStore | None = None,
    at: dt.datetime | None = None,
    expected_nonce: bytes | None = None,
    endorsements: dict[str, bytes] | None = None,
    live_nonce: bytes | None = None,
) -> ResponseReport:
    """Check a signed result response against the node's endorsement document. Never raises for bad input:
    every problem is a failed, named check. `endorsements` (vcek, chain, crl) override the document's;
    `live_nonce`: the document was fetched with ?nonce= and must carry fresh evidence for the bound keys."""
    rep = ResponseReport()
    try:
        pol, tr, extra = policy or Policy.strict(), trust or TrustStore.default(), endorsements or {}
        _verify(rep, resp, document, pol, tr, at, expected_nonce, extra)
        if live_nonce is not None:
            _check_live(rep, document, live_nonce, pol, tr, at, extra)
    except Exception as exc:  # noqa: BLE001 - a verifier reports, it does not crash
        rep.add("internal_error", False, f"{type(exc).__name__}: {exc}")
    return rep


def _verify(rep: ResponseReport, resp: RawResponse, document: dict | None, policy: Policy, trust: TrustStore,
            at: dt.datetime | None, expected_nonce: bytes | None, extra: dict[str, bytes]) -> None:
    rep.fields["status"] = resp.status
    ans = is_ans104(resp)
    rep.fields["codec"] = ANS104_CODEC if ans else "httpsig (RFC 9421)"

    node: EndorsedNode | None = None
    try:
        if document is None:
            raise ValueError("no endorsement document (fetch it from the node or pass --evidence FILE)")
        node = EndorsedNode.from_document(document)
        rep.add("endorsements", True, f"node {node.address}, tee {node.tee}, epoch {node.epoch}")
        rep.fields["node"] = {"address": node.address, "ed25519": b64url(node.ed25519_pub), "epoch": node.epoch,
                              "tee": node.tee, "node_config": node.node_config}
    except ValueError as exc:
        rep.add("endorsements", False, str(exc))

    cd = resp.header("content-digest")
    if cd is None:
        rep.add("content_digest", False, "no Content-Digest header")
    else:
        try:
            ok = verify_content_digest(cd, resp.body)
            rep.add("content_digest", ok, "matches the body" if ok else "does not match the body")
        except CodecError as exc:
            rep.add("content_digest", False, str(exc))

    if ans:
        payload, att_value, signer_key = _verify_ans104(rep, resp, node)
    else:
        payload, att_value, signer_key = resp.body, resp.header("attestation"), _verify_httpsig(rep, resp, node)
    rep.payload = payload

    # the Attestation value (header, or tag for ANS-104)
    att: AttestationInfo | None = None
    where = "tag" if ans else "header"
    if att_value is None:
        rep.add("attestation", False, f"no Attestation {where}")
    else:
        try:
            att = parse_attestation_header(att_value)
            if node is not None and att.tee != node.tee:
                raise ValueError(f"response says tee {att.tee!r}, the endorsements say {node.tee!r}")
            rep.add("attestation", True, f"tee {att.tee}" + (f", {att.binding} binding" if att.binding else ""))
        except ValueError as exc:
            rep.add("attestation", False, str(exc))
    rep.fields["tee"] = att.tee if att else None
    rep.fields["simulated"] = bool(att and att.tee.startswith("sim-"))

    if att is not None and att.tee == "none":
        rep.add("binding.key", False, "no evidence binds the signing key: the node states tee=none")
        if expected_nonce is not None:
            rep.add("binding.fresh", False, "a nonce was sent but the node has no TEE to bind it")
        rep.add("evidence", False, "no TEE evidence: the node runs without a TEE (tee=none), results are not attested")
        return
    if att is None or node is None:
        rep.add("binding.key", False, "cannot check: " + ("no usable Attestation" if att is None else "no endorsements"))
        rep.add("evidence", False, "cannot check: " + ("no usable Attestation" if att is None else "no endorsements"))
        return

    # a result signed before a rotation: the past key (with its own evidence) the document lists for it
    past = node.for_signer(signer_key, att.epoch)
    if past is not node:
        node = past
        rep.add("endorsements.past_key", True, f"signed by the node's past key of epoch {node.epoch}"
                + (f", retired at {node.retired_at}" if node.retired_at is not None else ""))
    # key binding: the signing key is one of the endorsed keys, and the endorsed keys are in REPORT_DATA
    if att.binding == "key":
        key_ev = Evidence(att.kind or "", att.tee, att.evidence or b"", dict(node.evidence.endorsements) if node.evidence else {})
    else:
        key_ev = node.evidence
    _check_key_binding(rep, node, att, key_ev, signer_key)

    fresh_ev = None
    if att.binding == "fresh" or expected_nonce is not None:
        fresh_ev = _check_fresh(rep, node, att, payload, expected_nonce)

    # evidence verification (policy + trust); fresh mode verifies the fresh evidence and the endorsed one
    if att.binding == "fresh":
        if fresh_ev is not None:
            _check_evidence(rep, "evidence", fresh_ev, policy, trust, at, extra)
        else:
            rep.add("evidence", False, "no fresh evidence to verify")
        if key_ev is not None:
            _check_evidence(rep, "evidence.endorsed", key_ev, policy, trust, at, extra)
    elif key_ev is not None:
        _check_evidence(rep, "evidence", key_ev, policy, trust, at, extra)


def _resolve_factory(node: EndorsedNode | None) -> tuple[rfc9421.KeyResolver, dict]:
    seen: dict = {}

    def resolve(keyid: str | None, alg: str | None) -> tuple[str, rfc9421.Key]:
        seen["keyid"] = keyid
        if node is not None and keyid == node.address:
            seen["key"] = ("rsa", node.n)
            return "rsa-pss-sha512", rsa_public_key(node.n)
        if keyid is not None and re.fullmatch(r"[A-Za-z0-9_-]{43}", keyid):
            try:
                pub = b64url_strict(keyid, "keyid")
                key = ed25519.Ed25519PublicKey.from_public_bytes(pub)
            except ValueError as exc:
                raise CodecError(f"keyid {keyid!r} is not an ed25519 public key: {exc}") from None
            seen["key"] = ("ed25519", pub)
            return "ed25519", key
        raise CodecError(f"keyid {keyid!r} names neither an ed25519 public key nor the endorsed node's wallet")

    return resolve, seen


def _verify_httpsig(rep: ResponseReport, resp: RawResponse, node: EndorsedNode | None) -> tuple[str, bytes] | None:
    resolve, seen = _resolve_factory(node)
    msg = resp.http_message()
    try:
        results = rfc9421.verify_message(msg, resolve, label=SIGNATURE_LABEL)
        v = results[0]
    except CodecError as exc:
        rep.add("signature", False, str(exc))
        rep.add("signature.components", False, "signature unusable")
        return None
    rep.fields["signature"] = {"alg": v.alg, "keyid": v.keyid, "components": v.components,
                               "created": v.params.get("created")}
    rep.add("signature", v.valid, f"{v.alg} by keyid {v.keyid}" if v.valid else f"{v.alg} signature by keyid {v.keyid} does NOT verify")
    need = ["@status", "content-digest", "attestation"]
    present = [h.lower() for h in IDENTITY_HEADERS if resp.header(h) is not None]
    missing = [c for c in need + present if c not in v.components]
    if not present:
        rep.add("signature.components", False, "the response names no result (Ao-Process / Ao-Slot / Ao-Message)")
    elif missing:
        rep.add("signature.components", False, f"not covered by the signature: {', '.join(missing)}")
    else:
        ident = {h: resp.header(h) for h in IDENTITY_HEADERS if resp.header(h) is not None}
        rep.fields["result"] = ident
        rep.add("signature.components", True, "covers " + ", ".join(need[:2] + present + need[2:]))
    return seen.get("key") if v.valid else None


def _verify_ans104(rep: ResponseReport, resp: RawResponse,
                   node: EndorsedNode | None) -> tuple[bytes, str | None, tuple[str, bytes] | None]:
    try:
        item = DataItem.parse(resp.body, limits=ANS104_LIMITS)
        rep.add("ans104.parse", True, f"item {item.id}, {len(item.data)} bytes of data")
    except CodecError as exc:
        rep.add("ans104.parse", False, str(exc))
        return b"", None, None
    ok = item.verify()
    rep.add("ans104.signature", ok, f"signature type {item.signature_type}" + ("" if ok else " does NOT verify"))
    if node is None:
        rep.add("ans104.owner", False, "no endorsements to compare the owner with")
    else:
        own = item.signature_type == 1 and hmac.compare_digest(item.owner, node.n)
        rep.add("ans104.owner", own, f"owner {item.owner_address}" + ("" if own else f" is not the node wallet {node.address}"))
    ident = {h: item.tag(h) for h in IDENTITY_HEADERS if item.tag(h) is not None}
    status_tag = item.tag(STATUS_TAG)
    problems = []
    if not ident:
        problems.append("no result identity tag (Ao-Process / Ao-Slot / Ao-Message)")
    if status_tag is None:
        problems.append(f"no {STATUS_TAG} tag")
    elif status_tag != str(resp.status):
        problems.append(f"{STATUS_TAG} {status_tag} differs from the HTTP status {resp.status}")
    if item.tag(ATTESTATION_TAG) is None:
        problems.append(f"no {ATTESTATION_TAG} tag")
    rep.add("ans104.tags", not problems, "; ".join(problems) or "identity, status and attestation tags present")
    rep.fields["result"] = {**ident, "status": status_tag}
    signer = ("rsa", item.owner) if ok and item.signature_type == 1 else None
    return item.data, item.tag(ATTESTATION_TAG), signer


def _check_key_binding(rep: ResponseReport, node: EndorsedNode, att: AttestationInfo, key_ev: Evidence | None,
                       signer: tuple[str, bytes] | None) -> None:
    if signer is None:
        rep.add("binding.key", False, "no valid signature, so no signing key to bind")
        return
    typ, pub = signer
    endorsed = node.ed25519_pub if typ == "ed25519" else node.n
    if not hmac.compare_digest(pub, endorsed):
        rep.add("binding.key", False, f"the result is signed by a {typ} key that is not the endorsed node's key "
                                      f"(signed by another node?)")
        return
    if att.epoch != node.epoch:
        rep.add("binding.key", False, f"response epoch {att.epoch} differs from the endorsed epoch {node.epoch} "
                                      "(the node rotated its key)")
        return
    if key_ev is None:
        rep.add("binding.key", False, "no key-binding evidence")
        return
    try:
        actual = report_data_of(key_ev.kind, key_ev.raw)
    except (ParseError, ValueError) as exc:
        rep.add("binding.key", False, f"cannot read REPORT_DATA: {exc}")
        return
    expected = node.key_report_data()
    ok = report_data_matches(actual, expected)
    rep.add("binding.key", ok, f"REPORT_DATA binds wallet {node.address}, ed25519 {b64url(node.ed25519_pub)}, "
                               f"epoch {node.epoch}, config {node.node_config_sha256.hex()[:16]}…" if ok else
            f"REPORT_DATA {actual.hex()[:32]}… is not the key binding of the endorsed keys ({expected.hex()[:32]}…)")


def _check_fresh(rep: ResponseReport, node: EndorsedNode, att: AttestationInfo, payload: bytes,
                 expected_nonce: bytes | None) -> Evidence | None:
    if att.binding != "fresh" or att.nonce is None:
        rep.add("binding.fresh", False, "a nonce was sent (attest-nonce) but the response carries key binding only")
        return None
    ev = Evidence(att.kind or "", att.tee, att.evidence or b"", dict(node.evidence.endorsements) if node.evidence else {})
    if expected_nonce is not None and not hmac.compare_digest(att.nonce, expected_nonce):
        rep.add("binding.fresh", False, f"the response's nonce {att.nonce.hex()} is not the nonce sent ({expected_nonce.hex()})")
        return ev
    try:
        actual = report_data_of(ev.kind, ev.raw)
    except (ParseError, ValueError) as exc:
        rep.add("binding.fresh", False, f"cannot read REPORT_DATA: {exc}")
        return ev
    expected = fresh_report_data(hashlib.sha256(payload).digest(), att.nonce)
    ok = report_data_matches(actual, expected)
    note = "" if expected_nonce is not None else " (nonce taken from the response: pass --nonce to check it is yours)"
    rep.add("binding.fresh", ok, (f"REPORT_DATA binds SHA-256 of the result and nonce {att.nonce.hex()}" + note) if ok
            else "REPORT_DATA is not SHA-512(\"aocu/result/v1\" 0x00 || SHA-256(result) || nonce)")
    return ev


def _check_live(rep: ResponseReport, document: dict | None, nonce: bytes, policy: Policy, trust: TrustStore,
                at: dt.datetime | None, extra: dict[str, bytes]) -> None:
    """Document fetched with ?nonce=: REPORT_DATA = fresh_report_data(SHA-256(key-binding REPORT_DATA), nonce)."""
    try:
        node = EndorsedNode.from_document(document or {})
        if node.evidence is None:
            raise ValueError("the node has no TEE (tee none): no live evidence")
        ne = (document or {}).get("nonce_evidence")
        if (document or {}).get("nonce") != nonce.hex() or not isinstance(ne, dict):
            raise ValueError(f"the document does not answer nonce {nonce.hex()}")
        ev = Evidence.from_json(ne.get("evidence"))
        actual = report_data_of(ev.kind, ev.raw)
    except (ValueError, ParseError) as exc:
        rep.add("binding.live", False, str(exc))
        return
    if not ev.endorsements and node.evidence is not None:
        ev.endorsements = dict(node.evidence.endorsements)
    ok = report_data_matches(actual, fresh_report_data(hashlib.sha256(node.key_report_data()).digest(), nonce))
    rep.add("binding.live", ok, f"fresh evidence for nonce {nonce.hex()[:16]}… binds the endorsed keys" if ok else
            "the document's nonce evidence does not bind SHA-256(key-binding REPORT_DATA) and the nonce")
    _check_evidence(rep, "evidence.live", ev, policy, trust, at, extra)


def _check_evidence(rep: ResponseReport, name: str, ev: Evidence, policy: Policy, trust: TrustStore,
                    at: dt.datetime | None, extra: dict[str, bytes]) -> None:
    vr = verify_evidence(ev, policy=policy, trust=trust, at=at, **extra)
    rep.evidence_reports[name] = vr
    failed = [c.name for c in vr.failed()]
    if vr.ok:
        rep.add(name, True, f"{ev.tee} evidence verified ({len(vr.checks)} checks)" +
                (" — SIMULATED, trusted only because --allow-simulated" if vr.simulated else ""))
    else:
        rep.add(name, False, f"{ev.tee} evidence NOT verified: failed {', '.join(failed) or 'no checks ran'}")
