"""MU role: `POST /` (data items: module upload, spawn, message; `?process-id=&assign=` assignments) and the
CU's `GET /`."""

from __future__ import annotations

import time

from flask import Blueprint, Response, request

from cu.http.routes_ops import dumps
from cu.http.state import node
from cu.node.errors import BadInput, LimitExceeded, NotImplementedHere

bp = Blueprint("mu", __name__)


@bp.get("/")
def info() -> Response:
    st = node()
    return Response(dumps({"address": st.identity.address, "timestamp": int(time.time() * 1000)}),
                    mimetype="application/json")


def _body(limit: int) -> bytes:
    """The request body. A body with a Content-Length over `limit` was refused by werkzeug (MAX_CONTENT_LENGTH)
    already; a chunked body (no Content-Length) is read here up to `limit` + 1 bytes, and LimitExceeded (413)
    when it is longer: werkzeug's own limit on such streams truncates them silently (a signature error then)."""
    if request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return request.get_data(cache=False)     # (an unterminated stream without a length reads as empty)
    stream = request.environ["wsgi.input"]
    buf = bytearray()
    while True:
        chunk = stream.read(min(1 << 16, limit + 1 - len(buf)))
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise LimitExceeded(f"request body exceeds the limit of {limit} bytes")


@bp.post("/")
def post_item() -> Response:
    st = node()
    pid = request.args.get("process-id")
    assign = request.args.get("assign")
    if pid or assign:
        if not (pid and assign):
            raise BadInput("You must set both process-id and assign to send an assignment, not just one")
        if "base-layer" in request.args or "exclude" in request.args:
            raise NotImplementedHere("base-layer and exclude assignments are not implemented by this node")
        acc = st.scheduler.assign(pid, assign)    # durably scheduled; the evaluator cranks it
        return Response(dumps({"message": "Processing Assignment", "id": acc.id}), status=202,
                        mimetype="application/json")
    raw = _body(st.config.max_body)
    acc = st.scheduler.ingest(raw)
    if acc.kind == "Message" and acc.fresh:
        st.note_fresh(acc.id)
    return Response(dumps({"message": "Processing DataItem", "id": acc.id}), status=202,
                    mimetype="application/json")


@bp.route("/monitor/<pid>", methods=["POST", "DELETE"])
def monitor(pid: str) -> Response:
    raise NotImplementedHere("process monitors are not implemented by this node: crons are evaluated when the "
                         "process is read (/cron, /dry-run, /state) and before each later message")
