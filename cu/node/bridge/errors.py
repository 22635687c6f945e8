"""Errors of the legacynet bridge: domain errors of the node core (`cu.node.errors`) that also say the bridge
raised them, so the bridge can tell an upstream or stream failure (warm state still good) from an engine one.
The class's domain kind (first base) decides what a route answers; `cu.http.errors` maps kinds to statuses."""

from __future__ import annotations

from cu.node.errors import (
    BadUpstream,
    Conflict,
    CoreError,
    Denied,
    Internal,
    Invalid,
    LimitExceeded,
    NotFound,
    NotImplementedHere,
    NotYet,
    Unavailable,
)


class BridgeError(CoreError):
    """Marker base of every bridge failure (defines no kind of its own: the domain base decides)."""


class UpstreamError(Unavailable, BridgeError):
    """The SU or the gateway could not be reached after bounded retries."""

    def __init__(self, service: str, url: str, reason: str, attempts: int) -> None:
        super().__init__(f"{service} unavailable: {reason} ({url}, {attempts} attempt(s))")
        self.service = service
        self.url = url
        self.reason = reason
        self.attempts = attempts


class UpstreamAnswerError(BadUpstream, UpstreamError):
    """The SU or the gateway answered, but not usably (an HTTP error, invalid JSON, an oversized body)."""


class StreamError(BridgeError):
    """Marker: the legacy message stream or a record in it is inconsistent."""


class StreamInvalid(Invalid, StreamError):
    """The stream contradicts itself (hash chain, not an ao process, a checkpoint that fails its hash)."""


class StreamMalformed(BadUpstream, StreamError):
    """An upstream record is malformed or the upstream paging misbehaves."""


class StreamMissing(NotFound, StreamError):
    """Something the stream names does not exist upstream."""


class BridgeNotFound(NotFound, BridgeError):
    pass


class BridgeNotYet(NotYet, BridgeError):
    pass


class BridgeConflict(Conflict, BridgeError):
    pass


class BridgeTooLarge(LimitExceeded, BridgeError):
    pass


class BridgeNotImplemented(NotImplementedHere, BridgeError):
    pass


class BridgeInternal(Internal, BridgeError):
    pass


class AccessDenied(Denied, BridgeError):
    def __init__(self, pid: str) -> None:
        super().__init__(f"Access denied for process {pid}")
