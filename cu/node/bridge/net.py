"""HTTP with bounded retries for the bridge's upstreams (legacy SU, gateway). Stdlib only.

Retries are bounded by attempts and by a total deadline, so a dead upstream gives a clear 503 quickly instead of
the legacy CU's silent ~15 s backoff per call (permaweb/ao#864)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from cu.node.bridge.errors import UpstreamAnswerError, UpstreamError

USER_AGENT = "aocu-bridge/1"
MAX_BODY = 1 << 30        # refuse absurd upstream bodies (a module or checkpoint may be large)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4              # tries per call
    base_delay_s: float = 0.25     # doubled after each failure
    max_delay_s: float = 2.0
    deadline_s: float = 10.0       # total time budget per call
    timeout_s: float = 15.0        # per request


class _SafeRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects (the SU may redirect to its current host) but only to http(s)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201 - stdlib signature
        if urllib.parse.urlparse(newurl).scheme not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, f"refusing redirect to {newurl!r}", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SafeRedirect())


class HttpClient:
    def __init__(self, service: str, policy: RetryPolicy | None = None) -> None:
        self.service = service
        self.policy = policy or RetryPolicy()
        self.requests = 0          # counters (tests, metrics)
        self.failures = 0

    def request(self, method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
                allow_404: bool = False) -> tuple[int, bytes, dict[str, str]]:
        """(status, body, headers). 2xx succeeds; 404 returns when `allow_404`; other 4xx fail at once (502);
        5xx, 429 and transport errors are retried within the policy, then fail with 503."""
        p = self.policy
        start = time.monotonic()
        delay = p.base_delay_s
        last = "no attempt made"
        attempt = 0
        while attempt < p.attempts:
            attempt += 1
            self.requests += 1
            req = urllib.request.Request(url, data=body, method=method,
                                         headers={"User-Agent": USER_AGENT, **(headers or {})})
            try:
                with _OPENER.open(req, timeout=p.timeout_s) as resp:
                    data = resp.read(MAX_BODY + 1)
                    if len(data) > MAX_BODY:
                        raise UpstreamAnswerError(self.service, url, "response body too large", attempt)
                    return resp.status, data, {k.lower(): v for k, v in resp.headers.items()}
            except urllib.error.HTTPError as exc:
                text = _snippet(exc.read(4096) if exc.fp else b"")
                if exc.code == 404 and allow_404:
                    return 404, b"", {}
                if 400 <= exc.code < 500 and exc.code not in (408, 425, 429):
                    self.failures += 1
                    raise UpstreamAnswerError(self.service, url, f"HTTP {exc.code} {text}".strip(), attempt) from None
                last = f"HTTP {exc.code} {text}".strip()
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                last = f"{type(exc).__name__}: {reason}"
            self.failures += 1
            elapsed = time.monotonic() - start
            if attempt >= p.attempts or elapsed + delay > p.deadline_s:
                break
            time.sleep(delay)
            delay = min(delay * 2, p.max_delay_s)
        raise UpstreamError(self.service, url, last, attempt)

    def get_json(self, url: str, *, allow_404: bool = False) -> Any:
        status, data, _ = self.request("GET", url, headers={"Accept": "application/json"}, allow_404=allow_404)
        if status == 404:
            return None
        return _parse_json(self.service, url, data)

    def post_json(self, url: str, payload: Any) -> Any:
        _, data, _ = self.request("POST", url, body=json.dumps(payload).encode(),
                                  headers={"Content-Type": "application/json", "Accept": "application/json"})
        return _parse_json(self.service, url, data)


def _parse_json(service: str, url: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise UpstreamAnswerError(service, url, f"invalid JSON response {_snippet(data)}", 1) from None


def _snippet(data: bytes) -> str:
    return data[:200].decode("utf-8", "replace").strip()


def check_base_url(url: str, what: str) -> str:
    """Upstream base URLs come from configuration or from a Scheduler-Location record: http(s) only."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{what} must be an http(s) URL, got {url!r}")
    return url.rstrip("/")


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")
