"""The one place where the node's domain errors become HTTP statuses (the legacy units' and HyperBEAM's)."""

from __future__ import annotations

from cu.node import errors as e

STATUS: dict[type[e.CoreError], int] = {
    e.BadInput: 400,
    e.Denied: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.Gone: 410,
    e.LimitExceeded: 413,
    e.Invalid: 422,
    e.NotYet: 425,
    e.Internal: 500,
    e.NotImplementedHere: 501,
    e.BadUpstream: 502,
    e.Unavailable: 503,
    e.Busy: 504,
}


def status_for(exc: e.CoreError) -> int:
    """The status of the most specific domain kind `exc` is (its class's first kind in MRO order)."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)  # type: ignore[arg-type]
        if status is not None:
            return status
    return 500
