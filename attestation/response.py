"""Verification of signed, attested node results (the library behind `aocu verify`).

Wire format (producer: cu.node.signer / cu.node.evidence_service):
  Content-Digest: sha-256=:<b64 SHA-256(body)>:                               (RFC 9530)
  Ao-Process: <pid>   Ao-Slot: <n>   Ao-Message: <id>                         (those that identify the result)
  Attestation: tee="sim-snp", binding="key", kind="snp", epoch=0, evidence=:<b64 report/quote>:
               (fresh: binding="fresh", ..., nonce=:<b64>:, evidence=...; no TEE: tee="none")
  Signature-Input: aocu=("@status" "content-digest" "ao-process" ... "attestation");created=T;keyid="K";alg="A"
  Signature: aocu=:<b64>:                                                      (RFC 9421)
  keyid: the ed25519 public key (b64url, alg ed25519) or the wallet address (alg rsa-pss-sha512).
  ANS-104 form (accept-codec: ans104@1.0): body = item signed by the wallet, data = the result, tags
  Content-Type, Ao-Status, Ao-Process/Ao-Slot/Ao-Message, Attestation (same value as the header).
  Key binding: REPORT_DATA = SHA-512("aocu/key-binding/v1" 0 || n || ed25519_pub || epoch_be64 || config_sha256);
  fresh binding: REPORT_DATA = SHA-512("aocu/result/v1" 0 || SHA-256(result bytes) || nonce), where the result
  bytes are the HTTP body (or the item's data for ANS-104).
Endorsements (certificates / collateral, public keys, epoch and node config) come from the node's
`GET /~attestation@1.0/evidence` (format aocu-endorsements/1). Every check is reported by name; the result
verifies only if all pass. Uses cu.codec for the signature formats (ARCHITECTURE.md allows that dependency).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import http_sfv
from cryptography.hazmat.primitives.asymmetric import ed25519

from cu.codec import rfc9421, sf
from cu.codec.ans104 import DataItem
from cu.codec.digest import verify_content_digest
from cu.codec.errors import CodecError
from cu.codec.tags import TagLimits
from cu.codec.wallet import rsa_public_key

from .binding import fresh_report_data, key_binding_report_data, report_data_matches
from .errors import AttestationError, ParseError
from .evidence import Evidence, verify_evidence
from .policy import Policy
from .result import Check
from .snp import parse_report
from .tdx import parse_quote
from .trust import TrustStore

SIGNATURE_LABEL = "aocu"
IDENTITY_HEADERS = ("Ao-Process", "Ao-Slot", "Ao-Message")
ATTESTATION_TAG = "Attestation"
STATUS_TAG = "Ao-Status"
DOCUMENT_FORMAT = "aocu-endorsements/1"
EVIDENCE_PATH = "/~attestation@1.0/evidence"
TEE_LABELS = ("snp", "tdx", "sim-snp", "sim-tdx", "none")
# A TDX quote (~4-5 KB with its PCK chain) exceeds arbundles' 4096-byte tag block; result items allow 64 KiB.
ANS104_LIMITS = TagLimits(max_tag_bytes=1 << 16, max_value=1 << 16)
MAX_RESPONSE = 64 * 1024 * 1024
MAX_DOCUMENT = 4 * 1024 * 1024
_ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,256}")


class ResponseFormatError(AttestationError):
    """The input is not an HTTP response / endorsement document this verifier can read."""


# -- shared formats (producer: cu.node.signer / evidence_service) ------------------------------------
def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, ASCII: node_config_sha256 = SHA-256 of these bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def check_identity_value(name: str, value: str) -> str:
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


# -- raw HTTP responses -------------------------------------------------------------------------------
@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    version: str = "1.1"

    def header(self, name: str) -> str | None:
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(v.strip() for v in vals) if vals else None

    def http_message(self) -> rfc9421.HTTPMessage:
        return rfc9421.HTTPMessage(headers=list(self.headers), status=self.status, body=self.body)


_STATUS_RE = re.compile(rb"HTTP/(\d(?:\.\d)?) (\d{3})(?: [^\r\n]*)?")


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """Head and body at the first empty line (CRLF or bare LF line endings)."""
    m = re.search(rb"\r?\n\r?\n", data)
    if m is None:
        return data, b""
    return data[: m.start()], data[m.end():]


def parse_raw_response(data: bytes) -> RawResponse:
    """A response as `curl -si` saves it: status line, header lines, empty line, body. Interim 1xx
    responses and redirects followed with `-L` (one head after another) are skipped: the last one counts."""
    if len(data) > MAX_RESPONSE:
        raise ResponseFormatError(f"response larger than {MAX_RESPONSE} bytes")
    rest = data
    while True:
        head, body = _split_head(rest)
        lines = re.split(rb"\r?\n", head)
        m = _STATUS_RE.fullmatch(lines[0].rstrip(b"\r"))
        if m is None:
            raise ResponseFormatError(
                "not a raw HTTP response: the first line must be a status line like 'HTTP/1.1 200 OK' "
                "(save it with `curl -si URL > FILE`)"
            )
        status = int(m.group(2))
        nxt = body.lstrip(b"\r\n")
        if (100 <= status < 200 or 300 <= status < 400) and _STATUS_RE.match(nxt):
            rest = nxt
            continue
        break
    headers: list[tuple[str, str]] = []
    for raw in lines[1:]:
        line = raw.decode("latin-1")
        if not line:
            continue
        if line[0] in " \t" and headers:  # obsolete line folding
            k, v = headers[-1]
            headers[-1] = (k, f"{v} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ResponseFormatError(f"malformed header line {line[:80]!r}")
        headers.append((name, value.strip()))
    return RawResponse(status, headers, body, m.group(1).decode())


def to_curl_bytes(resp: RawResponse) -> bytes:
    """The bytes `curl -si` writes for this response (HTTP/1.1 form)."""
    head = f"HTTP/{resp.version} {resp.status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in resp.headers)
    return head.encode("latin-1") + b"\r\n" + resp.body


def fetch(url: str, *, headers: dict[str, str] | None = None, timeout: float = 30.0) -> RawResponse:
    """GET `url`; error statuses are responses too (they are signed the same way)."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise ResponseFormatError(f"{url}: only http and https URLs")
    req = urllib.request.Request(url, headers=headers or {})
    try:
        r = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - scheme checked above
    except urllib.error.HTTPError as exc:
        r = exc
    except (urllib.error.URLError, OSError) as exc:
        raise ResponseFormatError(f"{url}: {getattr(exc, 'reason', exc)}") from exc
    with r:
        body = r.read(MAX_RESPONSE + 1)
        if len(body) > MAX_RESPONSE:
            raise ResponseFormatError(f"{url}: response larger than {MAX_RESPONSE} bytes")
        return RawResponse(r.status if hasattr(r, "status") else r.code, list(r.headers.items()), body)


def evidence_url(url: str) -> str:
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}{EVIDENCE_PATH}"


def fetch_endorsements(url: str, *, nonce: bytes | None = None, timeout: float = 30.0) -> dict:
    """The node's endorsement document; with `nonce`, also fresh evidence that the bound keys are live."""
    target = evidence_url(url) + (f"?nonce={nonce.hex()}" if nonce is not None else "")
    r = fetch(target, headers={"Accept": "application/json"}, timeout=timeout)
    if r.status != 200:
        raise ResponseFormatError(f"{target}: HTTP {r.status}")
    return load_document(r.body)


def load_document(blob: bytes) -> dict:
    if len(blob) > MAX_DOCUMENT:
        raise ResponseFormatError(f"endorsement document larger than {MAX_DOCUMENT} bytes")
    try:
        doc = json.loads(blob)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResponseFormatError(f"endorsement document is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ResponseFormatError("endorsement document must be a JSON object")
    return doc


# -- endorsement document -----------------------------------------------------------------------------
def _b64url(text: object, what: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError(f"{what} must be unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} must be unpadded base64url") from None


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


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
        n = _b64url(node.get("wallet_n"), "node.wallet_n")
        if not 512 <= len(n) <= 1024:
            raise ValueError("node.wallet_n must be a 4096..8192-bit RSA modulus")
        ed = _b64url(node.get("ed25519"), "node.ed25519")
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
        return cls(tee, address, n, ed, epoch, cfg, cfg_sha, evidence, no_ev if isinstance(no_ev, str) else None)

    def key_report_data(self) -> bytes:
        return key_binding_report_data(self.n, self.ed25519_pub, self.epoch, self.node_config_sha256)


def report_data_of(kind: str, raw: bytes) -> bytes:
    """REPORT_DATA of an SNP report or TDX quote (ParseError if it is neither)."""
    return parse_report(raw).report_data if kind == "snp" else parse_quote(raw).body.report_data


# -- the report ---------------------------------------------------------------------------------------
@dataclass
class ResponseReport:
    checks: list[Check] = field(default_factory=list)
    fields: dict = field(default_factory=dict)
    evidence_reports: dict[str, Any] = field(default_factory=dict)  # name -> VerificationReport

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

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
            "checks": [c.to_dict() for c in self.checks],
            "failed": [c.name for c in self.failed()],
            "fields": self.fields,
            "evidence": {k: v.to_dict() for k, v in self.evidence_reports.items()},
        }

    def format_text(self, verbose: bool = False) -> str:
        """One line per check; the evidence verifier's failed sub-checks (all of them when verbose)."""
        lines = []
        for c in self.checks:
            lines.append(f"{'PASS' if c.ok else 'FAIL'}  {c.name}" + (f": {c.detail}" if c.detail else ""))
            rep = self.evidence_reports.get(c.name)
            if rep is not None:
                for sub in (rep.checks if verbose else rep.failed()):
                    line = f"        {'pass' if sub.ok else 'FAIL'}  {sub.name}" + (f": {sub.detail}" if sub.detail else "")
                    if not sub.ok and sub.relax:
                        line += f"  [to accept, relax policy key {sub.relax}]"
                    lines.append(line)
        verdict = "VERIFIED" if self.ok else "NOT VERIFIED"
        if self.fields.get("simulated"):
            verdict += " (SIMULATED TEE — not hardware evidence)"
        failed = self.failed()
        tail = f": failed {', '.join(c.name for c in failed)}" if failed else f": all {len(self.checks)} checks passed"
        lines.append(verdict + tail)
        return "\n".join(lines)


# -- verification -------------------------------------------------------------------------------------
def is_ans104(resp: RawResponse) -> bool:
    ct = (resp.header("content-type") or "").split(";")[0].strip().lower()
    return ct == "application/ans104" or (resp.header("codec-device") or "").strip().lower() == "ans104@1.0"


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
    rep.fields["codec"] = "ans104@1.0" if ans else "httpsig (RFC 9421)"

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
                pub = _b64url(keyid, "keyid")
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
