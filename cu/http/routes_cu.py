"""Legacy CU routes (docs/HTTP-API.md): /result, /results, /dry-run, /state, /cron.

A route naming a process that is not scheduled on this node is computed by the legacynet bridge when `aocu serve
--gateway` configured one; the evaluator's dispatcher decides that, not these routes."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, request

from cu.http import admission, cursors
from cu.http.routes_attestation import reply_codec
from cu.http.routes_ops import dumps
from cu.http.state import NodeApp, node
from cu.http.state_stream import state_response
from cu.node import legacy, rpc
from cu.node.errors import BadInput, Busy, LimitExceeded, NotFound
from cu.node.store import ResultRow

bp = Blueprint("cu", __name__)



def _pid_param() -> str:
    pid = request.args.get("process-id")
    if not pid:
        # the legacy CU answers a Zod failure with 500; a missing parameter is the client's error
        raise BadInput("process-id query parameter is required")
    return pid


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="application/json")


@bp.get("/result/<message_id>")
def result(message_id: str) -> Response:
    status, body = result_reply(node(), _pid_param(), message_id, "no-busy" in request.args)
    return _json(body, status)


def result_reply(st: NodeApp, pid: str, message_id: str, no_busy: bool) -> tuple[int, bytes]:
    """(status, body) of `/result`: the stored result, or the evaluator's (evaluating up to the message first).
    Shared with the hot route (cu/http/hot.py)."""
    if not st.take_fresh(message_id):
        row = st.store.result_by_message(pid, message_id)
        if row is not None:
            return 200, row.body
    try:
        return 200, st.evaluator.result(pid, message_id)
    except Busy:
        if no_busy:
            raise
        # the legacy CU's busy answer; the evaluation continues and a later request gets the result
        return 202, dumps({"message": f'Evaluation of process "{pid}" to "{message_id}" is in progress.'})


def _bound(value: str | None) -> rpc.Bound | None:
    """A `from`/`to` parameter: a cursor (base64 JSON {timestamp, ordinate, cron}) or a timestamp."""
    if value is None or value == "":
        return None
    cur = cursors.decode(value)
    return rpc.Bound(cur.timestamp, cur.ordinate, cur.cron)


def _limit(default: int, maximum: int | None) -> int:
    raw = request.args.get("limit")
    if raw is None or raw == "":
        return default
    try:
        n = int(raw)
    except ValueError:
        raise BadInput("limit must be an integer") from None
    if n <= 0:
        raise BadInput("limit must be positive")
    return min(n, maximum) if maximum else n


def _connection(rows: list[ResultRow], has_next: bool, sort: str) -> dict[str, Any]:
    edges = []
    for r in rows:
        node_ = legacy.results_node(json.loads(r.body))
        edges.append({"cursor": cursors.encode(r, sort), "node": node_})
    return {"pageInfo": {"hasNextPage": has_next}, "edges": edges}


@bp.get("/results/<pid>")
def results(pid: str) -> Response:
    sort = (request.args.get("sort") or "ASC").upper()
    if sort not in ("ASC", "DESC"):
        raise BadInput("sort must be ASC or DESC")
    rows, more = node().evaluator.results_page(
        pid, after=_bound(request.args.get("from")), until=_bound(request.args.get("to")),
        descending=sort == "DESC", limit=_limit(25, 1000), crons_only=False, skip_errors=True)
    return _json(dumps(_connection(rows, more, sort)))


@bp.get("/cron/<pid>")
def crons(pid: str) -> Response:
    st = node()
    st.evaluator.cron(pid)
    rows, more = st.evaluator.results_page(
        pid, after=_bound(request.args.get("from")), until=_bound(request.args.get("to")), descending=False,
        limit=_limit(500, 1000), crons_only=True, skip_errors=False)
    return _json(dumps(_connection(rows, more, "ASC")))


def _at() -> rpc.At | None:
    """The legacy `to` parameter: a millisecond timestamp, or the id of a scheduled message."""
    to = request.args.get("to")
    if not to:
        return None
    if to.isascii() and to.isdigit():
        if len(to) > 18:
            raise BadInput("to must be a millisecond timestamp below 10^18 or a message id")
        return rpc.At(timestamp=int(to))
    if not (len(to) <= 128 and all(c.isascii() and (c.isalnum() or c in "-_") for c in to)):
        raise BadInput("to must be a millisecond timestamp or a message id")
    return rpc.At(message_id=to)


@bp.post("/dry-run")
@admission.dry_run
def dry_run() -> Response:
    st = node()
    pid = _pid_param()
    if not st.config.bridge_enabled and st.store.process(pid) is None:
        raise NotFound(f"Process {pid} not found")     # before the body is read, as the legacy CU answers
    at = _at()
    if request.content_length is not None and request.content_length > st.config.max_dry_run_body:
        raise LimitExceeded(f"dry-run body exceeds the limit of {st.config.max_dry_run_body} bytes")
    raw = request.get_data(cache=False)
    if len(raw) > st.config.max_dry_run_body:
        raise LimitExceeded(f"dry-run body exceeds the limit of {st.config.max_dry_run_body} bytes")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadInput("dry-run body must be JSON") from None
    except RecursionError:
        raise BadInput("dry-run body is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadInput("dry-run body must be a JSON object")
    return _json(st.evaluator.dry_run(pid, body, at))


@bp.get("/state/<pid>")
def state(pid: str) -> Response:
    st = node()
    # a large state streams in chunks (cu/http/state_stream.py)
    return state_response(st.evaluator, st.evaluator.state(pid, _at()), st.config.state_chunk,
                          reply_codec(request))
