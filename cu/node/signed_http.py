"""httpsig@1.0 messages on the node: what `Scheduler.ingest_http` accepts, the form it stores, and the legacy
message (Id, Owner, Tags, Data, ...) the module is given for it.

Receiving (`receive`): the request as received (method, request-target, header lines in order with their raw
values, body). Only what a signature covers is the message (HyperBEAM's `with_only_committed`): the covered
header lines, and the body when a signature covers its content-digest. Signature/Signature-Input must carry
at least one rsa-pss-sha512 or ed25519 commitment, and every commitment (hmac-sha256 ones included) must
verify against the raw received values (RFC 9421 base as the signer built it, or HyperBEAM's form of it).

Transport headers (`TRANSPORT_HEADERS`) describe the connection, not the message. Routes may strip them or pass
them on: an uncovered header is never part of the message, and transport headers do not count towards the
header limits. A covered one is part of the message like any other header.

Stored form (items table, codec `httpsig`):

    aocu-httpsig/1 <body length> <METHOD> <request-target>\\n
    <name>: <value>\\n          one line per received header line that belongs to the signed message
    ...
    \\n
    <body><data copy>

The header lines are, in the order received and byte for byte, the lines of every covered component plus the
Signature and Signature-Input lines; the body is the received body. Method and request-target are kept for
reference (no signature covers them). The data copy is the legacy Data when that is not the body itself (a
`data` header or multipart part), so the data is always the last `ItemMeta.size` bytes of the stored form, as
for an ANS-104 item (the store, the evaluator's fresh-message cache and `/raw` rely on that).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cu.codec import httpsig, structured
from cu.codec.commitment import DEVICE_HTTPSIG, Commitment
from cu.codec.digest import verify_content_digest
from cu.codec.errors import CodecError
from cu.codec.hashes import b64url, sha256
from cu.codec.message import Message
from cu.node.errors import BadInput, Internal
from cu.node.store import ItemMeta

MAGIC = b"aocu-httpsig/1"
CODEC = "httpsig"

# Connection-level headers a client, browser or proxy adds: not part of an httpsig message unless signed.
TRANSPORT_HEADERS = frozenset({
    "host", "content-length", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
    "trailer", "upgrade", "expect", "accept", "accept-encoding", "accept-language", "user-agent", "origin",
    "referer", "cookie", "cache-control", "pragma", "dnt", "priority", "sec-fetch-mode", "sec-fetch-site",
    "sec-fetch-dest", "sec-fetch-user", "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform",
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip", "forwarded",
    "via", "codec-device",
})
SIGNATURE_HEADERS = ("signature", "signature-input")
SIGNATURE_TYPES = ("rsa-pss-sha512", "ed25519")
MAX_HEADER_LINES = 256            # non-transport header lines
MAX_HEADER_BYTES = 64 * 1024      # their names and values together
MAX_LINE_BYTES = 16 * 1024        # one header value (a Signature-Input of many commitments can be long)
MAX_TARGET_BYTES = 8 * 1024       # the request-target

# dev_json_iface prepare_header_case_tags/2 drops these keys from the Tags list (they have their own fields).
NOT_TAGS = ("id", "anchor", "owner", "data", "target", "signature", "commitments")

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True)
class Received:
    """A verified signed request: what is stored, and the message it carries."""
    method: str
    path: str
    lines: list[tuple[str, bytes]]     # the stored header lines (covered components + signature headers)
    body: bytes
    message: Message                   # the covered fields and every commitment
    signer: Commitment                 # the first signature commitment (Owner/From/Signature of the message)

    @property
    def id(self) -> str:
        return self.message.id

    @property
    def owner_key(self) -> bytes:
        return httpsig.public_key(str(self.signer.keyid))


@dataclass(frozen=True)
class Legacy:
    """The message as HyperBEAM's genesis-wasm path hands it to a legacy module (see `legacy_view`)."""
    fields: dict[str, bytes]           # the message keys (lowercase) that become Tags, body parts placed
    tags: list[tuple[str, str]]
    data: bytes
    data_is_body: bool                 # Data is the whole received body (no copy needed in the stored form)
    target: str
    anchor: str | None


def _value_bytes(name: str, value: str | bytes) -> bytes:
    if isinstance(value, str):
        try:
            raw = value.encode("latin-1")      # WSGI hands header bytes over as latin-1 text
        except UnicodeEncodeError:
            raw = value.encode("utf-8")
    elif isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    else:
        raise BadInput(f"header {name}: value must be text")
    if any(b in (0x0A, 0x0D, 0x00) for b in raw):
        raise BadInput(f"header {name}: value contains CR, LF or NUL")
    return raw


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _check_request_line(method: str, path: str) -> None:
    if not isinstance(method, str) or not _TOKEN.match(method):
        raise BadInput(f"bad HTTP method {method!r}")
    if not isinstance(path, str) or not path or len(path.encode("utf-8")) > MAX_TARGET_BYTES or \
            any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise BadInput("bad request-target (empty, too long, or containing spaces or control characters)")


def _checked_lines(headers: list[tuple[str, str]]) -> list[tuple[str, bytes]]:
    lines: list[tuple[str, bytes]] = []
    count = total = 0
    for pair in headers:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise BadInput("headers must be (name, value) pairs")
        name, value = pair
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise BadInput(f"bad header name {name!r}")
        raw = _value_bytes(name, value)
        if len(raw) > MAX_LINE_BYTES:
            raise BadInput(f"header {name} is longer than {MAX_LINE_BYTES} bytes")
        if name.lower() not in TRANSPORT_HEADERS:
            count += 1
            total += len(name) + len(raw)
            if count > MAX_HEADER_LINES or total > MAX_HEADER_BYTES:
                raise BadInput(f"too many or too large headers (at most {MAX_HEADER_LINES} lines, "
                               f"{MAX_HEADER_BYTES} bytes)")
        if name.lower() == "body":
            raise BadInput("a header named 'body' collides with the message body")
        lines.append((name, raw))
    return lines


def _names(c: Commitment) -> list[str]:
    return [x.lstrip("@").lower() for x in c.components]


def receive(method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Received:
    """Parse and verify a signed httpsig@1.0 request (BadInput naming what failed)."""
    _check_request_line(method, path)
    lines = _checked_lines(headers)
    body = bytes(body or b"")
    if not any(n.lower() in SIGNATURE_HEADERS for n, _ in lines):
        raise BadInput("the httpsig@1.0 message is not signed (no Signature / Signature-Input headers)")
    try:
        full = Message.from_http(lines, body)
    except CodecError as exc:
        raise BadInput(f"malformed httpsig@1.0 signature headers: {exc}") from None
    for c in full.commitments:
        if c.device != DEVICE_HTTPSIG:
            raise BadInput(f"signature {c.label}: commitment device {c.device} is not accepted here "
                           "(send ANS-104 items as ans104@1.0)")
    signed = [c for c in full.commitments if c.signed]
    if not signed:
        raise BadInput("the httpsig@1.0 message is not signed (hmac-sha256 commitments only): sign it with "
                       "rsa-pss-sha512 or ed25519")
    for c in signed:
        if c.type not in SIGNATURE_TYPES:
            raise BadInput(f"signature {c.label}: algorithm {c.type} is not accepted ({', '.join(SIGNATURE_TYPES)})")
        if not c.keyid:
            raise BadInput(f"signature {c.label} has no keyid")
    if body:
        if not any("content-digest" in _names(c) for c in signed):
            raise BadInput("the request body is not covered by a signature (sign its content-digest)")
        cd = full.get("content-digest")
        if cd is not None:      # a covered but missing content-digest fails with its signature below
            try:
                ok = verify_content_digest(cd.decode("latin-1"), body)
            except CodecError as exc:
                raise BadInput(f"content-digest: {exc}") from None
            if not ok:
                raise BadInput("content-digest does not match the body")
    # An empty body under a covered content-digest is accepted: ao-core-libs 0.0.9 signs the digest (and
    # inline-body-key) of its body and then sends the request without it. The signature still binds the
    # digest value; the message simply has no body (its data is lost by that client). Anyone relaying such a
    # request could drop a body the same way, and the message id (from the signature alone) would not change.
    for c in full.commitments:
        try:
            ok = httpsig.verify_commitment(full.fields, c, absent_body_ok=True)
        except CodecError as exc:
            raise BadInput(f"signature {c.label} cannot be checked: {exc}") from None
        if not ok:
            raise BadInput(f"signature {c.label} ({c.type}) does not verify: the signature or a covered component "
                           f"({', '.join(_names(c))}) was changed")
    covered = {n for c in full.commitments for n in _names(c)} | set(SIGNATURE_HEADERS)
    kept = [(n, v) for n, v in lines if n.lower() in covered]
    return Received(method, path, kept, body, full.only_committed(), signed[0])


def header_case(key: str) -> str:
    """`data-protocol` -> `Data-Protocol` (dev_json_iface's header-case: each `-` word title-cased)."""
    return "-".join(w[:1].upper() + w[1:] for w in key.lower().split("-") if w)


def legacy_view(msg: Message) -> Legacy:
    """The legacy message fields of a verified httpsig message, as HyperBEAM's genesis-wasm path builds them.

    Followed: HyperBEAM `dev_codec_httpsig_conv` from/3 (the body goes under the key `inline-body-key` /
    `ao-body-key` names, default `body`; a multipart body is split into one key per part; `content-digest` and
    a multipart `content-type` are dropped; Signature/Signature-Input become commitments) and
    `dev_json_iface` message_to_json_struct/3 with prepare_header_case_tags/2 (the message has no ANS-104
    `original-tags`, so Tags are its keys minus id, anchor, owner, data, target, signature and commitments,
    header-cased, sorted by key: the order of an Erlang map of up to 32 keys (larger maps iterate in hash order,
    not reproduced here); Data = the `data` key; Target = `target`; Anchor =
    `anchor`; Owner = the signer's address; From = `from-process`, else Owner, applied by
    `legacy.scheduled_message`; Signature = the commitment's signature, base64url).
    Differences, so the module loses nothing: a body under the key `body` (no `data` key) is the Data rather
    than a `Body` tag; `ao-types` is given in HyperBEAM's own encoding (`k="integer"`), which its structured
    codec writes when it re-encodes the message, while other typed values stay as the client sent them.
    A multipart part that is itself a message (headers of its own, or a `/` path) has no legacy form: BadInput.
    """
    fields = {k.lower(): v for k, v in msg.fields.items()}
    body = fields.pop("body", b"")
    fields.pop("content-digest", None)
    try:
        boundary = structured.multipart_boundary(fields.get("content-type"))
    except CodecError as exc:
        raise BadInput(str(exc)) from None
    if boundary is not None:
        fields.pop("content-type", None)
    body_key = _text(fields.get("inline-body-key") or fields.get("ao-body-key") or b"body").strip().lower() or "body"
    whole_body_key = None

    def place(key: str, value: bytes) -> None:
        if key in fields:
            raise BadInput(f"the body part {key!r} repeats a header of the same name")
        fields[key] = value

    if body and boundary is None:
        place(body_key, body)
        whole_body_key = body_key
    elif body:
        try:
            parts = structured.body_parts(msg.fields.get("content-type"), body) or []
        except CodecError as exc:
            raise BadInput(f"multipart body: {exc}") from None
        for name, hdrs, content in parts:
            key = body_key if name is None else name.lower()
            if hdrs or "/" in key:
                raise BadInput(f"multipart part {key!r} is a nested message: it has no legacy form (tags and data)")
            place(key, content)
    data_key = "data" if "data" in fields else "body" if "body" in fields else None
    data = fields.pop(data_key) if data_key else b""
    target = _text(fields.get("target", b""))
    anchor = _text(fields["anchor"]) if fields.get("anchor") else None
    tag_fields = {k: v for k, v in fields.items() if k not in NOT_TAGS}
    if "ao-types" in tag_fields:
        try:
            tag_fields["ao-types"] = structured.encode_ao_types(structured.parse_ao_types(tag_fields["ao-types"]))
        except CodecError:
            pass        # not a dictionary: handed on as sent
    tags = [(header_case(k), _text(v)) for k, v in sorted(tag_fields.items())]
    return Legacy(fields, tags, data, data_key is not None and data_key == whole_body_key, target, anchor)


def stored_item(rec: Received, view: Legacy, *, kind: str, target: str, now_ms: int) -> tuple[ItemMeta, bytes]:
    """(ItemMeta, stored form) of a received message: the data is the last `size` bytes of the stored form."""
    key = rec.owner_key
    raw = frame(rec.method, rec.path, rec.lines, rec.body, b"" if view.data_is_body else view.data)
    meta = ItemMeta(id=rec.id, owner=b64url(sha256(key)), owner_key=key, target=target, anchor=view.anchor,
                    signature=b64url(rec.signer.signature), tags=view.tags, kind=kind, created_ms=now_ms,
                    size=len(view.data), codec=CODEC)
    return meta, raw


# -- the stored form ----------------------------------------------------------------------------------------
def _latin1_or_utf8(s: str) -> bytes:
    try:
        return s.encode("latin-1")
    except UnicodeEncodeError:
        return s.encode("utf-8")


def frame(method: str, path: str, lines: list[tuple[str, bytes]], body: bytes, tail: bytes = b"") -> bytes:
    head = [b"%s %d %s %s" % (MAGIC, len(body), method.encode("ascii"), _latin1_or_utf8(path))]
    head += [name.encode("ascii") + b": " + value for name, value in lines]
    return b"\n".join(head) + b"\n\n" + body + tail


def unframe(raw: bytes) -> tuple[str, str, list[tuple[str, str]], bytes]:
    """(method, request-target, header lines, body) of a stored form; header values as latin-1 text (the bytes
    received)."""
    try:
        end = raw.index(b"\n\n")
        first, *rest = raw[:end].split(b"\n")
        magic, size, method, path = first.split(b" ")
        if magic != MAGIC:
            raise ValueError("not an aocu-httpsig frame")
        n = int(size)
        body = raw[end + 2:end + 2 + n]
        if len(body) != n:
            raise ValueError("body shorter than its length")
        lines = []
        for line in rest:
            name, sep, value = line.partition(b": ")
            if not sep:
                raise ValueError("header line without ': '")
            lines.append((name.decode("ascii"), value.decode("latin-1")))
        return method.decode("ascii"), path.decode("latin-1"), lines, body
    except (ValueError, UnicodeDecodeError) as exc:
        raise Internal(f"stored httpsig message is malformed: {exc}") from None
