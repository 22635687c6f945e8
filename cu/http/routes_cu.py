"""Legacy CU routes (AO-ABI §13): /result, /results, /dry-run, /state, /cron.

A route naming a process that is not scheduled on this node goes to the legacynet bridge when `aocu serve
--gateway` configured one (the `bridge_*` evaluator operations); otherwise it is a 404 as before."""

from __future__ import annotations

import base64
import json
from typing import Any

from flask import Blueprint, Response, request

from cu.http.routes_ops import dumps
from cu.http.state import node
from cu.node.bridge.node_hook import is_remote
from cu.node.errors import BadInput, Busy, CoreError, LimitExceeded, NotFound, NotImplementedHere
from cu.node.evaluator import result_cursor
from cu.node.store import ResultRow

bp = Blueprint("cu", __name__)

BIG = 1 << 62


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
    st = node()
    pid = _pid_param()
    op = "result"
    if is_remote(st.store, st.config, pid):
        op = "bridge_result"
    elif not st.take_fresh(message_id):
        row = st.store.result_by_message(pid, message_id)
        if row is not None:
            return _json(row.body)
    try:
        return _json(st.evaluator.call(op, pid=pid, message=message_id)["body"])
    except CoreError as exc:
        if not isinstance(exc, Busy) or "no-busy" in request.args:
            raise
        # the legacy CU's busy answer; the evaluation continues and a later request gets the result
        return _json(dumps({"message": f'Evaluation of process "{pid}" to "{message_id}" is in progress.'}), 202)


def _bound(pid: str, value: str | None, descending: bool, *, inclusive: bool,
           remote: bool = False) -> tuple[int, int] | None:
    """A cursor (base64 JSON {timestamp, ordinate, cron}) or a timestamp -> a (timestamp, seq) bound."""
    if value is None or value == "":
        return None
    if value.lstrip("-").isdigit():
        ts = int(value)
        if inclusive:
            return (ts, -1) if descending else (ts, BIG)
        return (ts, -1) if descending else (ts, BIG)
    try:
        obj = json.loads(base64.b64decode(value + "=" * (-len(value) % 4), validate=False))
        ts = int(obj["timestamp"])
        ordinate = int(obj["ordinate"])
        cron = obj.get("cron")
    except (ValueError, KeyError, TypeError):
        raise BadInput(f"invalid cursor {value!r}") from None
    if remote:
        seq = node().evaluator.call("bridge_seq_for", pid=pid, timestamp=ts, nonce=ordinate, cron=cron)["seq"]
    else:
        seq = node().store.seq_for(pid, ts, ordinate, cron)
    if seq is None:
        return (ts, -1) if descending else (ts, BIG)
    return (ts, seq)


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
        body = json.loads(r.body)
        node_: dict[str, Any] = {"Messages": body.get("Messages", []), "Assignments": body.get("Assignments", []),
                                 "Spawns": body.get("Spawns", []), "Output": body.get("Output", "")}
        if body.get("Error") is not None:
            node_["Error"] = body["Error"]
        if "GasUsed" in body:
            node_["GasUsed"] = body["GasUsed"]
        edges.append({"cursor": result_cursor(r, sort), "node": node_})
    return {"pageInfo": {"hasNextPage": has_next}, "edges": edges}


def _require_process(pid: str) -> bool:
    """True when the process is computed by the legacynet bridge, False when it is scheduled here."""
    st = node()
    if is_remote(st.store, st.config, pid):
        return True
    if st.store.process(pid) is None:
        raise NotFound(f"Process {pid} not found")
    return False


def _page(pid: str, remote: bool, *, after: tuple[int, int] | None, until: tuple[int, int] | None,
          descending: bool, limit: int, crons_only: bool, skip_errors: bool) -> tuple[list[ResultRow], bool]:
    st = node()
    if not remote:
        return st.store.results_page(pid, after=after, until=until, descending=descending, limit=limit,
                                     crons_only=crons_only, skip_errors=skip_errors)
    out = st.evaluator.call("bridge_results_page", pid=pid, after=after, until=until, descending=descending,
                            limit=limit, crons_only=crons_only, skip_errors=skip_errors)
    return [ResultRow(*row) for row in out["rows"]], bool(out["more"])


@bp.get("/results/<pid>")
def results(pid: str) -> Response:
    st = node()
    remote = _require_process(pid)
    sort = (request.args.get("sort") or "ASC").upper()
    if sort not in ("ASC", "DESC"):
        raise BadInput("sort must be ASC or DESC")
    desc = sort == "DESC"
    if not remote:
        st.evaluator.call("flush")   # results evaluated moments ago may still be queued for writing
    rows, more = _page(
        pid, remote, after=_bound(pid, request.args.get("from"), desc, inclusive=False, remote=remote),
        until=_bound(pid, request.args.get("to"), desc, inclusive=True, remote=remote), descending=desc,
        limit=_limit(25, 1000), crons_only=False, skip_errors=True)
    return _json(dumps(_connection(rows, more, sort)))


@bp.get("/cron/<pid>")
def crons(pid: str) -> Response:
    st = node()
    remote = _require_process(pid)
    st.evaluator.call("bridge_cron" if remote else "cron", pid=pid)
    rows, more = _page(
        pid, remote, after=_bound(pid, request.args.get("from"), False, inclusive=False, remote=remote),
        until=_bound(pid, request.args.get("to"), False, inclusive=True, remote=remote), descending=False,
        limit=_limit(500, 1000), crons_only=True, skip_errors=False)
    return _json(dumps(_connection(rows, more, "ASC")))


@bp.post("/dry-run")
def dry_run() -> Response:
    st = node()
    pid = _pid_param()
    remote = _require_process(pid)
    if request.args.get("to"):
        raise NotImplementedHere("dry-run against an earlier message (to=) is not implemented: dry-runs use the "
                             "latest state")
    if request.content_length is not None and request.content_length > st.config.max_dry_run_body:
        raise LimitExceeded(f"dry-run body exceeds the limit of {st.config.max_dry_run_body} bytes")
    raw = request.get_data(cache=False)
    if len(raw) > st.config.max_dry_run_body:
        raise LimitExceeded(f"dry-run body exceeds the limit of {st.config.max_dry_run_body} bytes")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadInput("dry-run body must be JSON") from None
    if not isinstance(body, dict):
        raise BadInput("dry-run body must be a JSON object")
    return _json(st.evaluator.call("bridge_dry_run" if remote else "dry_run", pid=pid, body=body)["body"])


@bp.get("/state/<pid>")
def state(pid: str) -> Response:
    st = node()
    remote = _require_process(pid)
    if request.args.get("to"):
        raise NotImplementedHere("state at an earlier timestamp (to=) is not implemented: /state serves the latest")
    out = st.evaluator.call("bridge_state" if remote else "state", pid=pid)
    resp = Response(out["body"], mimetype="application/octet-stream")
    for k, v in out.get("headers", {}).items():
        resp.headers[k] = v
    return resp
