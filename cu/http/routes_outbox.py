"""`GET /~outbox@1.0/{pid}`: a process's outbox entries and where each went (docs/EXCHANGE.md). Read from the
store by the worker (entries are written durably with their results, so there is nothing to flush)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from cu.http.routes_ops import dumps
from cu.http.state import node
from cu.node.errors import NotFound

bp = Blueprint("outbox", __name__)


@bp.get("/~outbox@1.0/<pid>")
def outbox(pid: str) -> Response:
    st = node()
    entries = st.store.outbox_entries(pid)
    if not entries and st.store.process(pid) is None:
        raise NotFound(f"Process {pid} not found (and no outbox entries of it are stored here)")
    out: list[dict[str, Any]] = [{
        "seq": e.seq, "index": e.idx, "type": e.kind, "target": e.target, "id": e.item_id, "state": e.state,
        "remote": e.remote, "attempts": e.attempts, "next-attempt": e.next_at if e.state == "pending" else None,
        "reason": e.reason, "updated": e.updated,
    } for e in entries]
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.state] = counts.get(e.state, 0) + 1
    return Response(dumps({"process": pid, "counts": counts, "entries": out}), mimetype="application/json")
