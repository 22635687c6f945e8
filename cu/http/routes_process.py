"""AO-Core process routes as the unchanged mainnet client uses them (docs/HTTP-API.md, AO-Core):

- `POST /push`: spawn (a Type=Process message whose devices are process@1.0 / scheduler@1.0 / push@1.0 /
  genesis-wasm@1.0); the reply names the process in the `process` header.
- `POST /{pid}~process@1.0/push`: schedule a message, evaluate it, deliver its outbox; JSON `{slot, id, process,
  raw, outbox}`.
- `POST|GET /{pid}[~process@1.0]/compute/results={slot or message id}`: JSON `{raw: <legacy result>, ...}`.
- `POST|GET /{pid}[~process@1.0]/slot/current`: the last assigned slot as plain text.
- `POST|GET /{pid}~process@1.0/as=execution/compute&Tag=Value...`: a dry-run; schedules nothing.

`genesis-wasm@1.0` is this node's own evaluator: a process spawned here runs its legacy module exactly as the
legacy CU does, and is the same process on the legacy routes (`/result/{id}?process-id=`, `/results/{pid}`).
Requests come in either codec (cu/http/aocore_request.py); every reply that carries a result is signed and
attested like the legacy result routes."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from cu.http import admission
from cu.http import aocore_request as areq
from cu.http.routes_attestation import set_reply_codec, set_result_identity
from cu.http.routes_ops import dumps
from cu.http.state import NodeApp, node
from cu.node.errors import BadInput, Busy, NotFound
from cu.node.ingest import Accepted
from cu.node.signer import ResultId

bp = Blueprint("process", __name__)

PROCESS_DEVICE = "process@1.0"


def _json(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status=status, mimetype="application/json")


def _with_raw(fields: dict[str, Any], raw: bytes | None, status: int = 200) -> Response:
    """`{"raw": <the stored legacy result JSON, as is>, ...fields}` without re-encoding the result."""
    head = dumps(fields)
    body = head if raw is None else b'{"raw":' + raw + (b"," + head[1:] if len(head) > 2 else b"}")
    return Response(body, status=status, mimetype="application/json")


def _message(max_body: int, *, scheduled: bool = False) -> areq.CoreRequest:
    """The request's message; `scheduled`: it is about to be scheduled, which verifies it (once)."""
    body = request.get_data(cache=False)
    if len(body) > max_body:
        raise BadInput(f"request body exceeds the limit of {max_body} bytes")
    msg = areq.parse(request, body, verify=not scheduled)
    set_reply_codec(msg.accept_codec)
    return msg


def _schedule(st: NodeApp, msg: areq.CoreRequest, process: str | None) -> Accepted:
    """Verifies, stores as received and schedules the request's message (ANS-104 item or httpsig)."""
    if msg.codec == areq.ANS104:
        assert msg.item is not None
        if process is not None:
            target = msg.get("target")
            if msg.item.tag("Type") != "Message":
                raise BadInput(f"a process push schedules a Type=Message item (got {msg.item.tag('Type')!r})")
            if target != process:
                raise BadInput(f"the message targets {target or 'no process'}, not {process}")
        return st.scheduler.ingest(msg.body)
    if msg.codec == areq.HTTPSIG:
        return st.scheduler.ingest_http(request.method, areq.raw_path(request), msg.headers, msg.body,
                                        process=process)
    raise BadInput("the message must be signed: an ANS-104 item (codec-device: ans104@1.0) or an httpsig@1.0 "
                   "request with Signature and Signature-Input")


# -- spawn -------------------------------------------------------------------------------------------------
@bp.post("/push")
def spawn() -> Response:
    st = node()
    msg = _message(st.config.max_body, scheduled=True)
    kind = (msg.get("type") or "").strip()
    if kind == "Message" and msg.get("target"):
        return _push(st, msg, str(msg.get("target")))
    if kind != "Process":
        raise BadInput(f"POST /push spawns a Type=Process message (got Type {kind or 'none'!r}); push a message "
                       "to /{process}~process@1.0/push")
    scheduler = msg.get("scheduler")
    if scheduler is not None and scheduler != st.identity.address:
        raise BadInput(f"this node schedules processes whose Scheduler is {st.identity.address}, not {scheduler}")
    acc = _schedule(st, msg, None)
    slot = acc.entry.nonce if acc.entry is not None else 0
    set_result_identity(ResultId(process=acc.id, slot=slot, message=acc.id))
    out: dict[str, Any] = {"process": acc.id, "slot": slot, "id": acc.id, "fresh": acc.fresh}
    if acc.entry is not None:
        out.update({"assignment": acc.entry.assignment_id, "timestamp": acc.entry.timestamp,
                    "block-height": acc.entry.block_height, "hash-chain": acc.entry.hash_chain})
    resp = _json(out)
    resp.headers["process"] = acc.id
    resp.headers["slot"] = str(slot)
    return resp


# -- push --------------------------------------------------------------------------------------------------
@bp.post(f"/<pid>~{PROCESS_DEVICE}/push")
def push(pid: str) -> Response:
    st = node()
    return _push(st, _message(st.config.max_body, scheduled=True), pid)


def _push(st: NodeApp, msg: areq.CoreRequest, pid: str) -> Response:
    acc = _schedule(st, msg, pid)
    entry = acc.entry
    if entry is None:
        raise NotFound(f"message {acc.id} was stored but not scheduled on {pid}")
    set_result_identity(ResultId(process=pid, slot=entry.nonce, message=acc.id))
    fields: dict[str, Any] = {"slot": entry.nonce, "id": acc.id, "process": pid, "fresh": acc.fresh}
    try:
        raw = st.evaluator.result(pid, acc.id)
    except Busy:
        # scheduled; the evaluation goes on and compute/results= gets it later
        return _with_raw(fields | {"status": "evaluating"}, None, 202)
    fields["outbox"] = _outbox(st, pid, acc.id)
    return _with_raw(fields, raw)


def _outbox(st: NodeApp, pid: str, message_id: str) -> list[dict[str, Any]]:
    """The messages, spawns and assignments the evaluation of `message_id` produced, and where each went
    (`state`: local, pending, delivered, failed; the whole record at /~outbox@1.0/{pid})."""
    row = st.store.result_by_message(pid, message_id)
    if row is None:
        return []      # written behind: a result without outbox effects
    return [{"index": e.idx, "type": e.kind, "target": e.target, "id": e.item_id, "state": e.state,
             "remote": e.remote} for e in st.store.outbox_entries(pid, row.seq)]


# -- results -----------------------------------------------------------------------------------------------
@bp.route(f"/<pid>~{PROCESS_DEVICE}/compute/results=<ref>", methods=["GET", "POST"])
@bp.route("/<pid>/compute/results=<ref>", methods=["GET", "POST"])
def compute_results(pid: str, ref: str) -> Response:
    st = node()
    _message(st.config.max_body)
    _known(st, pid)
    if ref.isdigit() and len(ref) <= 19:
        entry = st.store.log_entry(pid, int(ref))
        if entry is None:
            raise NotFound(f"slot {ref} of process {pid} is not scheduled")
    elif areq.ID_RE.match(ref):
        entry = st.store.log_entry_by_message(pid, ref)
        if entry is None:
            raise NotFound(f"message {ref} is not scheduled on process {pid}")
    else:
        raise BadInput(f"results= takes a slot number or a message id (got {ref[:64]!r})")
    set_result_identity(ResultId(process=pid, slot=entry.nonce, message=entry.message_id))
    raw = st.evaluator.result(pid, entry.message_id)
    return _with_raw({"slot": entry.nonce, "id": entry.message_id, "process": pid}, raw)


# -- slot ------------------------------------------------------------------------------------------------
@bp.route(f"/<pid>~{PROCESS_DEVICE}/slot/current", methods=["GET", "POST"])
@bp.route("/<pid>/slot/current", methods=["GET", "POST"])
def slot_current(pid: str) -> Response:
    st = node()
    _message(st.config.max_body)
    proc = _known(st, pid)
    set_result_identity(ResultId(process=pid, slot=proc.nonce))
    resp = Response(str(proc.nonce), mimetype="text/plain")
    resp.headers["ao-result"] = "body"
    return resp


# -- dry-run -----------------------------------------------------------------------------------------------
@bp.route(f"/<pid>~{PROCESS_DEVICE}/as=execution/<path:rest>", methods=["GET", "POST"])
@admission.dry_run
def dry_run(pid: str, rest: str) -> Response:
    st = node()
    msg = _message(st.config.max_dry_run_body)
    segs = areq.segments(areq.raw_path(request))
    try:
        at = next(i for i, s in enumerate(segs) if s == "as=execution")
    except StopIteration:
        raise BadInput("dry-run path must be /{process}~process@1.0/as=execution/compute[&Tag=Value...]") from None
    if len(segs) != at + 2:
        raise BadInput("dry-run path must end with one compute[&Tag=Value...] segment")
    key, params = areq.key_params(segs[at + 1])
    if key != "compute":
        raise BadInput(f"as=execution supports the compute key (got {key!r})")
    if not st.config.bridge_enabled:
        _known(st, pid)
    tags = [{"name": n, "value": v} for n, v in params]
    # the message's own ao tags (never the transport keys that negotiate the exchange)
    for name in ("Data-Protocol", "Type", "Variant"):
        v = msg.get(name)
        if v is not None and not any(t["name"] == name for t in tags):
            tags.append({"name": name, "value": v})
    body: dict[str, Any] = {"Target": pid, "Tags": tags, "Data": msg.data.decode("utf-8", "replace")}
    if msg.item is not None:
        body.update({"Id": msg.item.id, "Owner": msg.item.owner_address})
    elif msg.get("owner"):
        body["Owner"] = str(msg.get("owner"))
    set_result_identity(ResultId(process=pid))
    return _with_raw({"process": pid}, st.evaluator.dry_run(pid, body))


def _known(st: NodeApp, pid: str) -> Any:
    proc = st.store.process(pid)
    if proc is None:
        raise NotFound(f"Message necessary to resolve request not found: {pid}")
    return proc
