"""AO-Core routes: `GET /~meta@1.0/info[/KEY]`, `POST /{pid}~process@1.0/schedule` (either codec),
`GET /~message@1.0/{id}` (a stored message in either codec),
`GET /{pid}~process@1.0/compute[/path]?slot=N`, `GET /{pid}~process@1.0/now[/path]`.

`compute` and `now` answer results: the response post-processor signs them under (process, slot[, message]).
A `/path` selects inside the answer's JSON (`/Output/data`, `/cache/balances/...`); a scalar is served as
text, an object or list as JSON.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, request

from cu import __version__
from cu.codec.ans104 import DataItem
from cu.codec.errors import CodecError
from cu.hashing import b64url
from cu.http.aocore_request import HTTPSIG, raw_path
from cu.http.routes_attestation import SIGNER_KEY, set_result_identity
from cu.http.routes_ops import dumps
from cu.http.state import node
from cu.node.errors import BadInput, NotFound, Unavailable
from cu.node.ingest import Accepted
from cu.node.messages import message_in_codec
from cu.node.signer import ResultId

bp = Blueprint("aocore", __name__)

SLOT_MAX = (1 << 63) - 1     # slots are SQLite integers

ROUTES = [
    "GET /~meta@1.0/info[/KEY]",
    "POST /push (spawn)",
    "POST /{pid}~process@1.0/push",
    "POST|GET /{pid}[~process@1.0]/compute/results={slot|message}",
    "POST|GET /{pid}[~process@1.0]/slot/current",
    "POST|GET /{pid}~process@1.0/as=execution/compute[&Tag=Value...]",
    "GET /~attestation@1.0/evidence[?nonce=HEX]",
    "POST /{pid}~process@1.0/schedule (ans104@1.0 or httpsig@1.0)",
    "GET /~message@1.0/{id} (accept-codec: httpsig@1.0 | ans104@1.0)",
    "GET /{pid}~process@1.0/compute[/path]?slot=N",
    "GET /{pid}~process@1.0/now[/path]",
    "GET /~outbox@1.0/{pid}",
]
MAX_PATH_DEPTH = 32


def _json(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status=status, mimetype="application/json")


@bp.get("/~meta@1.0/info/<key>")
def meta_info_key(key: str) -> Response:
    """One key of the node's info as the raw body (`address`: what the mainnet client uses as the scheduler)."""
    info = json.loads(meta_info().get_data())
    if key not in info:
        raise NotFound(f"no key {key!r} in the node's info")
    v = info[key]
    if isinstance(v, (dict, list)):
        return _json(v)
    resp = Response(str(v), mimetype="text/plain")
    resp.headers["ao-result"] = "body"
    return resp


@bp.get("/~meta@1.0/info")
def meta_info() -> Response:
    st = node()
    signer = current_app.extensions.get(SIGNER_KEY)
    info: dict[str, Any] = {
        "software": "aocu", "version": __version__, "address": st.identity.address,
        "ed25519": b64url(st.identity.ed25519.owner), "tee": st.config.tee, "tee_notice": st.tee_notice,
    }
    if signer is not None:
        info["tee"] = signer.evidence.tee
        info["epoch"] = signer.identity.epoch
        info["keyids"] = {"ed25519": signer.identity.keyid_ed25519, "rsa-pss-sha512": signer.identity.keyid_rsa}
        info["ed25519"] = b64url(signer.identity.ed25519_pub)
        info["keys"] = signer.evidence.keys()   # current + past keys with their evidence (docs/SEALING.md)
    info["routes"] = ROUTES
    return _json(info)


# -- schedule -------------------------------------------------------------------------------------------
@bp.post("/<pid>~process@1.0/schedule")
def schedule(pid: str) -> Response:
    st = node()
    codec = (request.headers.get("codec-device") or "").strip().lower()
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if not codec:
        codec = "ans104@1.0" if ctype in ("application/ans104", "application/octet-stream") else "httpsig@1.0"
    if codec == "httpsig@1.0":
        # verified against the raw received headers, stored as received (cu/node/signed_http.py)
        acc = st.scheduler.ingest_http(request.method, raw_path(request), list(request.headers.items()),
                                       request.get_data(cache=False), process=pid)
        return _scheduled(pid, acc)
    if codec != "ans104@1.0":
        raise BadInput(f"codec-device {codec!r} is not supported (ans104@1.0 or httpsig@1.0)")
    raw = request.get_data(cache=False)
    try:
        item = DataItem.parse(raw)
    except CodecError as exc:
        raise BadInput(f"A valid and signed data item must be provided as the body: {exc}") from None
    kind = item.tag("Type")
    target = b64url(item.target) if item.target else ""
    if kind == "Message" and target != pid:
        raise BadInput(f"the message targets {target or 'no process'}, not {pid}")
    if kind == "Process" and item.id != pid:
        raise BadInput(f"the process item's id is {item.id}, not {pid}")
    if kind not in ("Message", "Process"):
        raise BadInput(f"a process schedules Type=Message items (got {kind!r})")
    return _scheduled(pid, st.scheduler.ingest(raw))   # verifies the signature, stores and schedules durably


def _scheduled(pid: str, acc: Accepted) -> Response:
    if acc.fresh and acc.entry is not None:
        # a pushed message (another unit's outbox delivery, docs/EXCHANGE.md) has no reader waiting for its
        # result: evaluate it now rather than --crank-delay after the acknowledgement
        node().evaluator.notify(acc.entry.pid)
    e = acc.entry
    out: dict[str, Any] = {"process": pid, "id": acc.id, "type": acc.kind, "fresh": acc.fresh}
    if e is not None:
        out.update({"slot": e.nonce, "assignment": e.assignment_id, "timestamp": e.timestamp,
                    "block-height": e.block_height, "hash-chain": e.hash_chain})
    return _json(out, 201 if acc.fresh else 200)


# -- messages in either codec ---------------------------------------------------------------------------
@bp.get("/~message@1.0/<message_id>")
def message(message_id: str) -> Response:
    """A stored message (item, process, assignment) in the codec `accept-codec` (or `?codec=`) names:
    httpsig@1.0 (default; exactly as received for httpsig messages) or ans104@1.0. 422 when the message has no
    exact form in that codec."""
    st = node()
    codec = (request.args.get("codec") or request.headers.get("accept-codec") or HTTPSIG).strip().lower()
    headers, body = message_in_codec(st.store, message_id, codec)
    resp = Response(body, mimetype=None)
    for k, v in headers:
        resp.headers.add(k, v)
    if "content-type" not in {k.lower() for k, _ in headers}:
        resp.headers["Content-Type"] = "application/octet-stream"
    resp.headers["codec-device"] = codec
    return resp


# -- compute / now --------------------------------------------------------------------------------------
def _select(obj: Any, path: str) -> Any:
    parts = [p for p in path.split("/") if p]
    if len(parts) > MAX_PATH_DEPTH:
        raise BadInput(f"path deeper than {MAX_PATH_DEPTH} keys")
    cur = obj
    for i, p in enumerate(parts):
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise NotFound(f"no key {'/'.join(parts[:i + 1])!r} in the result")
    return cur


def _answer(obj: Any, path: str) -> Response:
    if not path.strip("/"):
        return _json(obj)
    v = _select(obj, path)
    if isinstance(v, (dict, list)):
        return _json(v)
    if v is None:
        return Response(b"null", mimetype="application/json")
    text = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return Response(text.encode("utf-8"), mimetype="text/plain")


def _require_process(pid: str) -> None:
    if node().store.process(pid) is None:
        raise NotFound(f"Process {pid} not found")


@bp.get("/<pid>~process@1.0/compute")
@bp.get("/<pid>~process@1.0/compute/<path:path>")
def compute(pid: str, path: str = "") -> Response:
    st = node()
    raw = request.args.get("slot")
    if raw is None or not (raw.isascii() and raw.isdigit()):
        raise BadInput("slot query parameter is required (a non-negative integer)")
    if len(raw.lstrip("0")) > 19 or int(raw) > SLOT_MAX:
        raise BadInput(f"slot {raw[:40]} out of range (at most {SLOT_MAX})")
    slot = int(raw)
    _require_process(pid)
    entry = st.store.log_entry(pid, slot)
    if entry is None:
        raise NotFound(f"slot {slot} of process {pid} is not scheduled")
    set_result_identity(ResultId(process=pid, slot=slot, message=entry.message_id))
    body = st.evaluator.result(pid, entry.message_id)
    if not path.strip("/"):
        return Response(body, mimetype="application/json")
    return _answer(json.loads(body), path)


@bp.get("/<pid>~process@1.0/now")
@bp.get("/<pid>~process@1.0/now/<path:path>")
def now(pid: str, path: str = "") -> Response:
    st = node()
    _require_process(pid)
    out = st.evaluator.now(pid)
    res = out.result
    results = json.loads(res.body) if res else None
    set_result_identity(ResultId(process=pid, slot=out.slot))
    doc = {"process": pid, "slot": out.slot, "timestamp": out.timestamp,
           "block-height": out.block_height, "results": results, "cache": out.cache}
    if out.cache is None:
        doc["cache-error"] = ("patch cache unavailable: the process was restored from a checkpoint written "
                              "without it; it is rebuilt when the process is next evaluated from the start")
        if path.strip("/").split("/")[0] == "cache":
            raise Unavailable(doc["cache-error"])
    if res is not None:
        doc["result-slot"] = res.slot
        if res.cron:
            doc["result-cron"] = res.cron
    return _answer(doc, path)
