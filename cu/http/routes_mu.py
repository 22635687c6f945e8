"""MU role: `POST /` (data items: module upload, spawn, message; `?process-id=&assign=` assignments) and the
CU's `GET /`."""

from __future__ import annotations

import time

from flask import Blueprint, Response, request

from cu.http.routes_ops import dumps
from cu.http.state import node
from cu.node.errors import BadInput, NotImplementedHere

bp = Blueprint("mu", __name__)


@bp.get("/")
def info() -> Response:
    st = node()
    return Response(dumps({"address": st.identity.address, "timestamp": int(time.time() * 1000)}),
                    mimetype="application/json")


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
    raw = request.get_data(cache=False)
    acc = st.scheduler.ingest(raw)
    if acc.kind == "Message" and acc.fresh:
        st.note_fresh(acc.id)
    return Response(dumps({"message": "Processing DataItem", "id": acc.id}), status=202,
                    mimetype="application/json")


@bp.route("/monitor/<pid>", methods=["POST", "DELETE"])
def monitor(pid: str) -> Response:
    raise NotImplementedHere("process monitors are not implemented by this node: crons are evaluated when the "
                         "process is read (/cron, /dry-run, /state) and before each later message")
