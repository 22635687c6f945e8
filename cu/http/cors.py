"""CORS for browser clients (aoconnect in a web app): a WSGI middleware around the Flask app.

- `OPTIONS` on any path is a preflight: 204 with `Access-Control-Allow-Origin`, `-Allow-Methods`,
  `-Allow-Headers` (echoing `Access-Control-Request-Headers`) and `-Max-Age`, answered here without reaching the
  routes (nothing is scheduled, signed or evaluated).
- Every other response gets `Access-Control-Allow-Origin` and `Access-Control-Expose-Headers` (the signature,
  attestation and result-identity headers a client verifies, and aoconnect's `process` / `slot`).

Allowed origins: `aocu serve --cors-origin ORIGIN` (repeatable; NodeConfig.cors_origins), default `*`. With a
list, a request's `Origin` is echoed when listed (with `Vary: Origin`) and left unanswered otherwise.

The headers are added after the response left the app, so after result signing (cu/http/signing.py): they are
not among the signed components (@status, content-digest, the result identity, attestation) and a signed result
verifies with or without them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS, PATCH"
EXPOSE_HEADERS = ("Signature, Signature-Input, Attestation, Content-Digest, Ao-Process, Ao-Slot, Ao-Message, "
                  "process, slot, X-Aocu-Tee")
MAX_AGE = "7200"      # seconds a browser may cache a preflight (Chromium's cap)
_ORIGIN = re.compile(r"https?://[^\s/?#@]+|null")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict, StartResponse], Iterable[bytes]]


def check_origins(origins: Iterable[str] | None) -> list[str]:
    """The configured origins, each `*` or `scheme://host[:port]` (trailing slash dropped); ValueError otherwise."""
    out = []
    for o in origins or ["*"]:
        o = str(o).strip().rstrip("/") if str(o).strip() != "*" else "*"
        if o != "*" and not _ORIGIN.fullmatch(o):
            raise ValueError(f"--cors-origin {o!r}: not an origin (scheme://host[:port], or *)")
        out.append(o)
    return out or ["*"]


class CorsMiddleware:
    def __init__(self, app: WSGIApp, origins: Iterable[str] | None = None) -> None:
        self.app = app
        self.origins = check_origins(origins)
        self.any = "*" in self.origins

    def allow_origin(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin value for a request from `origin` (None: not allowed)."""
        if self.any:
            return "*"
        if origin and origin.rstrip("/") in self.origins:
            return origin
        return None

    def _cors_headers(self, environ: dict, preflight: bool) -> list[tuple[str, str]]:
        allowed = self.allow_origin(environ.get("HTTP_ORIGIN"))
        out = [] if self.any else [("Vary", "Origin")]
        if allowed is None:
            return out
        out.append(("Access-Control-Allow-Origin", allowed))
        if preflight:
            out.append(("Access-Control-Allow-Methods", ALLOW_METHODS))
            requested = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "").strip()
            if requested:
                out.append(("Access-Control-Allow-Headers", " ".join(requested.split())))
            out.append(("Access-Control-Max-Age", MAX_AGE))
        else:
            out.append(("Access-Control-Expose-Headers", EXPOSE_HEADERS))
        return out

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "").upper() == "OPTIONS":
            headers = [("Allow", ALLOW_METHODS), ("Content-Length", "0"), *self._cors_headers(environ, True)]
            start_response("204 No Content", headers)
            return [b""]
        extra = self._cors_headers(environ, False)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            have = {k.lower() for k, _ in headers}
            merged = [(k, f"{v}, Origin" if k.lower() == "vary" and not self.any and "origin" not in v.lower()
                       else v) for k, v in headers]
            merged += [(k, v) for k, v in extra if k.lower() not in have]
            return start_response(status, merged, exc_info) if exc_info is not None else start_response(status, merged)

        return self.app(environ, start)


def install(app: Any, origins: Iterable[str] | None) -> None:
    """Wraps the Flask app's WSGI callable (create_app calls this once)."""
    app.wsgi_app = CorsMiddleware(app.wsgi_app, origins)
