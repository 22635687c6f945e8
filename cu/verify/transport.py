"""Reading and fetching what `aocu verify` checks: raw HTTP responses as `curl -si` saves them, and the
node's endorsement document (`GET /~attestation@1.0/evidence`, format aocu-endorsements/1)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from attestation.errors import AttestationError
from cu.codec import rfc9421
from cu.wire.response import EVIDENCE_PATH

MAX_RESPONSE = 64 * 1024 * 1024
MAX_DOCUMENT = 4 * 1024 * 1024


class ResponseFormatError(AttestationError):
    """The input is not an HTTP response / endorsement document this verifier can read."""


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


def fetch(url: str, *, headers: dict[str, str] | None = None, timeout: float = 30.0, method: str = "GET",
          data: bytes | None = None) -> RawResponse:
    """`method` (GET by default) `url`, with `data` as the request body; error statuses are responses too (they
    are signed the same way)."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise ResponseFormatError(f"{url}: only http and https URLs")
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method.upper())
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
