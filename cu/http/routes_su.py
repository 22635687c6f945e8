"""SU read routes in the legacy page shapes (docs/HTTP-API.md, su): /timestamp, /processes/{pid}, /{pid}, /{pid}/latest."""

from __future__ import annotations

import time

from flask import Blueprint, Response, request

from cu.http.routes_ops import dumps
from cu.http.state import node
from cu.node import blocks
from cu.node.errors import BadInput, Internal, NotFound

bp = Blueprint("su", __name__)


def _json(obj: object) -> Response:
    return Response(dumps(obj), mimetype="application/json")


@bp.get("/timestamp")
def timestamp() -> Response:
    st = node()
    return _json({"timestamp": int(time.time() * 1000), "block_height": f"{blocks.height(st.config):012d}"})


@bp.get("/processes/<pid>")
def process(pid: str) -> Response:
    return _json(node().scheduler.process_json(pid))


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        n = int(raw)
    except ValueError:
        raise BadInput(f"{name} must be an integer") from None
    if not -(1 << 63) <= n < 1 << 63:     # SQLite integers (OverflowError in the store otherwise)
        raise BadInput(f"{name} out of range (a signed 64-bit integer)")
    return n


@bp.get("/<item_id>")
def messages(item_id: str) -> Response:
    st = node()
    sch = st.scheduler
    pid = request.args.get("process-id") or item_id
    if pid != item_id:
        # GET /{messageId}?process-id={pid}: one message with its assignment
        if st.store.process(pid) is None:
            raise NotFound("Process not found")
        entry = st.store.log_entry_by_message(pid, item_id)
        if entry is None:
            entry = next((e for e in _by_assignment(pid, item_id)), None)
        if entry is None:
            raise NotFound("Message not found")
        return _json({"message": sch.message_json(entry), "assignment": sch.assignment_json(entry)})
    if st.store.process(pid) is None:
        raise NotFound("Process not found")
    limit = _int_arg("limit") or 100
    if limit <= 0:
        raise BadInput("limit must be positive")
    limit = min(limit, 1000)
    # cursors are nonces; `from` given as a timestamp is exclusive, `to` inclusive (legacy SU semantics)
    from_raw = _int_arg("from")
    to_ts = _int_arg("to")
    from_nonce = from_ts = None
    if from_raw is not None:
        if from_raw > 10_000_000_000:
            from_ts = from_raw
        else:
            from_nonce = from_raw
    entries, more = st.store.log_page(pid, from_nonce=from_nonce, from_ts=from_ts, to_ts=to_ts, limit=limit)
    return _json({"page_info": {"has_next_page": more},
                  "edges": [sch.edge(e, str(e.nonce)) for e in entries]})


def _by_assignment(pid: str, assignment_id: str) -> list:
    meta = node().store.item_meta(assignment_id)
    if meta is None or meta.kind != "Assignment":
        return []
    nonce = next((v for n, v in meta.tags if n == "Nonce"), None)
    if nonce is None or not nonce.isdigit():
        return []
    e = node().store.log_entry(pid, int(nonce))
    return [e] if e else []


@bp.get("/<pid>/latest")
def latest(pid: str) -> Response:
    st = node()
    proc = st.store.process(pid)
    if proc is None:
        raise NotFound("Process not found")
    entry = st.store.log_entry(pid, proc.nonce)
    if entry is None:
        raise Internal(f"latest entry of {pid} missing")
    return _json({"message": st.scheduler.message_json(entry), "assignment": st.scheduler.assignment_json(entry)})
