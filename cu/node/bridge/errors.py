"""Errors of the legacynet bridge. They are `NodeError`s, so the legacy routes answer them with their status and a
`{"error": reason}` body like every other node error."""

from __future__ import annotations

from cu.node.errors import NodeError


class BridgeError(NodeError):
    """A bridge failure with the HTTP status the legacy CU routes should answer."""


class UpstreamError(BridgeError):
    """The SU or the gateway could not be reached or answered badly after bounded retries (503/502)."""

    def __init__(self, status: int, service: str, url: str, reason: str, attempts: int) -> None:
        super().__init__(status, f"{service} unavailable: {reason} ({url}, {attempts} attempt(s))")
        self.service = service
        self.url = url
        self.reason = reason
        self.attempts = attempts


class StreamError(BridgeError):
    """The legacy message stream is inconsistent (hash chain, nonce gap, malformed edge): 422/502."""


class AccessDenied(BridgeError):
    def __init__(self, pid: str) -> None:
        super().__init__(403, f"Access denied for process {pid}")
