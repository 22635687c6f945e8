"""HTTP for the deliverer: one keep-alive connection per (thread, host), bounded reads, every failure to get an
answer as `NetError` (the entry is retried). Stdlib only."""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

USER_AGENT = "aocu-exchange/1"
MAX_REPLY = 1 << 20          # a scheduler's answer is small


class NetError(Exception):
    """No HTTP answer (refused, reset, timed out, malformed)."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None

    def error(self) -> str:
        """The remote's reason: `{"error": ...}` or the start of the body."""
        obj = self.json()
        if isinstance(obj, dict) and isinstance(obj.get("error"), str):
            return obj["error"][:500]
        return self.body[:300].decode("utf-8", "replace").strip() or f"HTTP {self.status}"


_local = threading.local()


def _conn(scheme: str, netloc: str, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
    pool: dict[tuple[str, str], http.client.HTTPConnection] = _local.__dict__.setdefault("pool", {})
    conn = pool.get((scheme, netloc))
    if conn is not None:
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn, True
    cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    conn = pool[(scheme, netloc)] = cls(netloc, timeout=timeout)
    return conn, False


def _drop(scheme: str, netloc: str) -> None:
    conn = _local.__dict__.get("pool", {}).pop((scheme, netloc), None)
    if conn is not None:
        conn.close()


def call(method: str, url: str, *, body: bytes | None = None, headers: list[tuple[str, str]] | None = None,
         timeout: float = 15.0) -> Reply:
    """One request; headers are sent in the order given (values as latin-1 text, the bytes received). A request
    on a reused connection that the remote had closed is sent once more on a fresh one (a repeated push is
    deduplicated by the remote scheduler)."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise NetError(f"not an http(s) URL: {url!r}")
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    for attempt in (0, 1):
        conn, reused = _conn(u.scheme, u.netloc, timeout)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            conn.putheader("User-Agent", USER_AGENT)
            for name, value in headers or []:
                conn.putheader(name, value)
            if body is not None or method in ("POST", "PUT"):
                conn.putheader("Content-Length", str(len(body or b"")))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read(MAX_REPLY + 1)
            if resp.will_close:
                _drop(u.scheme, u.netloc)
            return Reply(resp.status, data[:MAX_REPLY])
        except (OSError, http.client.HTTPException) as exc:
            _drop(u.scheme, u.netloc)
            stale = reused and isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError,
                                                BrokenPipeError))
            if attempt == 0 and stale:
                continue
            raise NetError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
    raise NetError("unreachable")
