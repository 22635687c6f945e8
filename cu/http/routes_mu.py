"""MU role: `POST /` (data items: module upload, spawn, message; `?process-id=&assign=` assignments) and the
CU's `GET /`."""

from __future__ import annotations

import time

from flask import Blueprint, Response, request

from cu.codec.ans104 import DataItem
from cu.codec.errors import CodecError
from cu.codec.hashes import B64URL_CHARS
from cu.http.routes_ops import dumps
from cu.http.routes_status import status_html, wants_html
from cu.http.state import NodeApp, node
from cu.node.bridge.gateway import GatewayClient
from cu.node.errors import BadInput, LimitExceeded, NotFound, NotImplementedHere, NotYet

bp = Blueprint("mu", __name__)


@bp.get("/")
def info() -> Response:
    if wants_html(request):     # a browser: the status page; every other client keeps this JSON
        return status_html()
    st = node()
    resp = Response(dumps({"address": st.identity.address, "timestamp": int(time.time() * 1000)}),
                    mimetype="application/json")
    resp.headers["Vary"] = "Accept"
    return resp


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


SETTLEMENT_DEPTH = 20     # the legacy SU's confirmations for a base-layer assignment without a Settlement-Depth tag


def _exclude() -> str:
    """`exclude`: comma-separated field names; the assignment carries one Exclude tag per value (legacy SU)."""
    raw = request.args.get("exclude")
    if raw is None:
        return ""
    values = raw.split(",")
    if len(values) > 16 or any(not v or len(v) > 128 or not v.isprintable() for v in values):
        raise BadInput("exclude must be a comma-separated list of field names (such as Data), at most 16, each "
                       "1-128 printable characters")
    return raw


def _check_settled(pid: str, message_id: str) -> None:
    """`base-layer`: as the legacy SU, the assigned transaction must be on Arweave with at least the process's
    Settlement-Depth (default 20) confirmations, read from the gateway."""
    st = node()
    bc = st.config.bridge
    if bc is None:
        raise NotImplementedHere("base-layer assignments need aocu serve --gateway: the transaction's "
                                 "confirmations are read from the gateway")
    proc = st.store.process(pid)
    if proc is None:
        raise NotFound(f"Process {pid} not found on this node")
    try:
        depth = int(next((v for n, v in proc.tags if n == "Settlement-Depth"), SETTLEMENT_DEPTH))
    except ValueError:
        depth = SETTLEMENT_DEPTH        # the legacy SU's fallback for an unparsable tag
    got = GatewayClient(bc.gateway_url, bc.graphql_url, policy=bc.retry).confirmations(message_id)
    if got is None or got < depth:
        raise NotYet(f"Not enough confirmations to assign: transaction {message_id} has {got or 0} on the gateway, "
                     f"process {pid} needs {depth} (Settlement-Depth)")


@bp.post("/")
def post_item() -> Response:
    st = node()
    pid = request.args.get("process-id")
    assign = request.args.get("assign")
    if pid or assign:
        if not (pid and assign):
            raise BadInput("You must set both process-id and assign to send an assignment, not just one")
        exclude = _exclude()
        if "base-layer" in request.args:
            _check_settled(pid, assign)
        acc = st.scheduler.assign(pid, assign, exclude)    # durably scheduled; the evaluator cranks it
        return Response(dumps({"message": "Processing Assignment", "id": acc.id}), status=202,
                        mimetype="application/json")
    return Response(accept_item(st, _body(st.config.max_body)), status=202, mimetype="application/json")


def accept_item(st: NodeApp, raw: bytes) -> bytes:
    """Ingests one posted data item (durably scheduled when it is a message); the 202 answer's body. Shared with
    the hot route (cu/http/hot.py)."""
    acc = st.scheduler.ingest(raw)
    if acc.kind == "Message" and acc.fresh:
        st.note_fresh(acc.id)
    if B64URL_CHARS.issuperset(acc.id):     # an item id needs no JSON escaping: dumps' bytes without dumps
        return b'{"message":"Processing DataItem","id":"' + acc.id.encode() + b'"}'
    return dumps({"message": "Processing DataItem", "id": acc.id})


@bp.route("/monitor/<pid>", methods=["POST", "DELETE"])
def monitor(pid: str) -> Response:
    """Legacy MU: start (POST) or stop (DELETE) running `pid`'s crons without reads (cu/node/monitors.py). The body
    is the signed data item aoconnect's `monitor`/`unmonitor` sends; the legacy MU requires one."""
    st = node()
    raw = _body(st.config.max_body)
    if not raw:
        raise BadInput("Signed data item is required")
    try:
        item = DataItem.parse(raw)
        ok = item.verify()
    except CodecError as exc:
        raise BadInput(f"the body must be a signed data item: {exc}") from None
    if not ok:
        raise BadInput("the body must be a signed data item: its signature does not verify")
    st.evaluator.monitor(pid, request.method == "POST")
    return Response("Monitoring process" if request.method == "POST" else "Process deleted", status=200,
                    mimetype="text/plain")
