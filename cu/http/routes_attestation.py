"""`GET /~attestation@1.0/evidence[?nonce=HEX]`: the node's evidence with its endorsements, and the result
signing wiring (which responses are results, and under which identity they are signed)."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, g, request

from cu.node.errors import BadInput, Unavailable
from cu.node.evidence_service import EvidenceError, parse_nonce
from cu.node.signer import ResultId, ResultSigner
from cu.wire.response import check_identity_value

bp = Blueprint("attestation", __name__)

SIGNER_KEY = "aocu.signer"


def signer_of(app_extensions: dict[str, Any]) -> ResultSigner | None:
    return app_extensions.get(SIGNER_KEY)


@bp.get("/~attestation@1.0/evidence")
def evidence() -> Response:
    from flask import current_app
    signer = signer_of(current_app.extensions)
    if signer is None:
        raise Unavailable("result signing is not configured on this node")
    raw = request.args.get("nonce")
    try:
        nonce = parse_nonce(raw) if raw is not None else None
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    try:
        doc = signer.evidence.endorsements_document(nonce)
    except EvidenceError as exc:
        raise Unavailable(str(exc)) from None
    return Response(json.dumps(doc), mimetype="application/json")


def _valid(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    try:
        return check_identity_value(name, str(value))
    except ValueError:
        return None


# endpoint -> where the process id comes from (a view arg or the process-id query parameter)
_LEGACY_RESULT_ROUTES = {
    "cu.result": "query",
    "cu.results": "view",
    "cu.dry_run": "query",
    "cu.crons": "view",
    "cu.state": "view",
}


def set_result_identity(result: ResultId) -> None:
    """AO-Core routes name the result they answer with (process, slot, message) for the signer."""
    g.aocu_result_id = result


def set_reply_codec(codec: str | None) -> None:
    """An AO-Core request whose reply codec was a signed tag of its message (not an HTTP header)."""
    g.aocu_reply_codec = codec


def reply_codec(req: Any) -> str | None:
    return g.get("aocu_reply_codec") or req.headers.get("accept-codec")


def identify(req: Any, _resp: Any) -> ResultId | None:
    """The identity a response is signed under, or None for responses that are not results."""
    rid = g.get("aocu_result_id")
    if rid is not None:
        return rid
    kind = _LEGACY_RESULT_ROUTES.get(req.endpoint or "")
    if kind is None:
        return None
    view = req.view_args or {}
    pid = _valid("Ao-Process", view.get("pid") if kind == "view" else req.args.get("process-id"))
    message = _valid("Ao-Message", view.get("message_id")) if req.endpoint == "cu.result" else None
    if pid is None and message is None:
        return None   # e.g. 400 for a missing process-id: nothing to name
    return ResultId(process=pid, message=message)
