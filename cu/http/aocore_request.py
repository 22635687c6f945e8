"""What an AO-Core request says, whichever codec carried it (docs/HTTP-API.md, AO-Core routes).

The mainnet client (`@permaweb/aoconnect` MODE "mainnet", ao-core-libs underneath) sends either one signed
ANS-104 item as the body (`codec-device: ans104@1.0`, `content-type: application/ans104`) or an RFC 9421-signed
HTTP request (httpsig@1.0, no codec-device). Its negotiation keys (`accept-codec`, `require-codec`,
`accept-bundle`, `signing-format`) travel as signed *tags* inside an ANS-104 item and as headers in httpsig, so
the reply format is chosen from the parsed message, not from the HTTP headers alone.

Path syntax: HyperBEAM paths carry `key=value` segments (`compute/results=5`, `as=execution`) and `&k=v`
parameters after a key (`compute&Action=Info`); each segment is percent-decoded after splitting on `/`, so a
tag value may contain an encoded `/`. The raw request target is used for that (Flask's path is already
decoded)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from flask import Request

from cu.codec.ans104 import DataItem
from cu.codec.errors import CodecError
from cu.hashing import b64url
from cu.node.errors import BadInput

ANS104 = "ans104@1.0"
HTTPSIG = "httpsig@1.0"
# keys that negotiate the exchange rather than being part of what the process is told
TRANSPORT_KEYS = frozenset({"signing-format", "accept-bundle", "accept-codec", "require-codec", "codec-device"})
# HTTP headers that belong to the connection or the client library, never to a message
HOP_HEADERS = frozenset({"host", "content-length", "connection", "keep-alive", "accept-encoding", "user-agent",
                         "accept", "accept-language", "sec-fetch-mode", "transfer-encoding", "te", "upgrade",
                         "origin", "referer", "cookie", "x-forwarded-for", "x-forwarded-proto", "x-real-ip"})
ID_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
MAX_SEGMENT = 512          # bytes per path segment, as HyperBEAM
MAX_PARAMS = 128


@dataclass
class CoreRequest:
    codec: str                                   # ans104@1.0 | httpsig@1.0 | none (no signed message)
    body: bytes
    headers: list[tuple[str, str]]               # as received, hop-by-hop headers removed
    item: DataItem | None = None
    keys: dict[str, str] = field(default_factory=dict)   # lower-cased message keys (tags or headers)

    @property
    def signer(self) -> str | None:
        return self.item.owner_address if self.item is not None else None

    def get(self, key: str) -> str | None:
        return self.keys.get(key.lower())

    @property
    def wants_json(self) -> bool:
        return (self.get("require-codec") or "").strip().lower() == "application/json"

    @property
    def accept_codec(self) -> str | None:
        v = (self.get("accept-codec") or "").strip().lower()
        return v or None

    @property
    def data(self) -> bytes:
        if self.item is not None:
            return self.item.data
        d = self.get("data")
        return d.encode("utf-8") if d is not None else self.body


def parse(req: Request, body: bytes, *, verify: bool = True) -> CoreRequest:
    """The request's message. An ANS-104 body must parse, and verify unless `verify` is False (the caller
    schedules it, and the scheduler verifies what it stores); an httpsig request is taken as headers (its
    signatures are verified by the scheduler when it is scheduled)."""
    headers = [(k, v) for k, v in req.headers.items() if k.lower() not in HOP_HEADERS]
    codec = (req.headers.get("codec-device") or "").strip().lower()
    ctype = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    if not codec and ctype == "application/ans104":
        codec = ANS104
    if codec == ANS104:
        if not body:
            raise BadInput("codec-device ans104@1.0 needs a signed data item as the body")
        try:
            item = DataItem.parse(body)
            ok = item.verify() if verify else True
        except CodecError as exc:
            raise BadInput(f"A valid and signed data item must be provided as the body: {exc}") from None
        if not ok:
            raise BadInput("A valid and signed data item must be provided as the body: signature verification "
                           "failed")
        keys: dict[str, str] = {}
        for name, value in item.tags:
            keys.setdefault(name.decode("utf-8", "replace").lower(), value.decode("utf-8", "replace"))
        if item.target:
            keys.setdefault("target", b64url(item.target))
        return CoreRequest(ANS104, body, headers, item, keys)
    if codec and codec != HTTPSIG:
        raise BadInput(f"codec-device {codec!r} is not supported (ans104@1.0 or httpsig@1.0)")
    keys = {}
    for k, v in headers:
        keys.setdefault(k.lower(), v)
    signed = "signature" in keys and "signature-input" in keys
    return CoreRequest(HTTPSIG if signed else "none", body, headers, None, keys)


def raw_path(req: Request) -> str:
    """The request target's path exactly as sent (still percent-encoded)."""
    raw = req.environ.get("RAW_URI") or req.environ.get("REQUEST_URI")
    if not raw:
        return req.environ.get("PATH_INFO", req.path)
    return raw.split("?", 1)[0]


def segments(path: str) -> list[str]:
    """Path segments, split on `/` before percent-decoding (an encoded `/` stays inside its segment)."""
    out = []
    for seg in path.split("/"):
        if not seg:
            continue
        if len(seg) > MAX_SEGMENT:
            raise BadInput(f"path segment longer than {MAX_SEGMENT} bytes")
        out.append(seg)
    return out


def key_params(segment: str) -> tuple[str, list[tuple[str, str]]]:
    """`compute&Action=Info&X=a%20b` -> ("compute", [("Action", "Info"), ("X", "a b")]); names keep their
    case (they become message tags), values are percent-decoded; a bare `&flag` is ("flag", "true")."""
    key, *rest = segment.split("&")
    if len(rest) > MAX_PARAMS:
        raise BadInput(f"more than {MAX_PARAMS} parameters in a path segment")
    params = []
    for part in rest:
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = unquote(name)
        if not name:
            raise BadInput(f"empty parameter name in path segment {segment[:80]!r}")
        params.append((name, unquote(value) if sep else "true"))
    return unquote(key), params
