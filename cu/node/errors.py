"""Domain errors of the node core. The core says *what* went wrong; `cu.http.errors` alone chooses the HTTP
status for each kind (and the evaluator RPC carries the kind, not a status, between processes)."""

from __future__ import annotations


class CoreError(Exception):
    """Base of every error the node core raises on purpose. `kind` names the class on the evaluator RPC."""

    kind = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(CoreError):
    """The request or message is malformed or not acceptable as sent."""

    kind = "bad_input"


class NotFound(CoreError):
    """A process, message, module or item the request names does not exist here."""

    kind = "not_found"


class Gone(NotFound):
    """It existed here but was removed on purpose (a result pruned by the retention policy)."""

    kind = "gone"


class NotYet(CoreError):
    """The thing exists but its answer is not (or can no longer be) computed here yet."""

    kind = "not_yet"


class Denied(CoreError):
    """The operator's configuration does not allow this (bridge allow/deny lists)."""

    kind = "denied"


class Conflict(CoreError):
    """The request contradicts the current state (a checkpoint of a process that is between messages)."""

    kind = "conflict"


class Invalid(CoreError):
    """Well formed, but its content cannot be processed: a module that does not load, an unsupported
    Module-Format or extension, a corrupt checkpoint, a legacy stream that fails its hash chain."""

    kind = "invalid"


class NotImplementedHere(CoreError):
    """A documented API feature this node does not implement."""

    kind = "not_implemented"


class LimitExceeded(CoreError):
    """A size or resource limit was exceeded (body, Memory-Limit, Compute-Limit)."""

    kind = "limit_exceeded"


class BadUpstream(CoreError):
    """An upstream (legacy SU, gateway) answered, but with something unusable."""

    kind = "bad_upstream"


class Unavailable(CoreError):
    """A dependency (store, evaluator, native engine, legacy upstream) cannot serve the request now."""

    kind = "unavailable"


class Busy(CoreError):
    """The work was started but did not finish within the wait allowed; it continues in the background."""

    kind = "busy"


class Internal(CoreError):
    """An invariant of the node broke (a log gap, a missing stored item): a bug or a damaged store."""

    kind = "internal"


KINDS: dict[str, type[CoreError]] = {cls.kind: cls for cls in (
    BadInput, Denied, NotFound, Gone, Conflict, NotYet, Invalid, NotImplementedHere, LimitExceeded, BadUpstream, Unavailable,
    Busy, Internal)}


def from_kind(kind: str, message: str) -> CoreError:
    """Rebuilds an error sent over the evaluator RPC (an unknown kind becomes Internal)."""
    return KINDS.get(kind, Internal)(message)
