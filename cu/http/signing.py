"""Signing every result response on its way out: the response post-processor that wraps cu.node.signer (which
responses are results is decided by `identify`, cu/http/routes_attestation.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from cu.http.errors import status_for
from cu.http.state_stream import STREAM_DIGEST_ATTR
from cu.node.errors import BadInput, Unavailable
from cu.node.evidence_service import EvidenceError, parse_nonce
from cu.node.signer import ResultId, ResultSigner, sign_result


def post_processor(
    signer: ResultSigner, identify: Callable[[Any, Any], ResultId | None],
    accept_codec: Callable[[Any], str | None] = lambda request: request.headers.get("accept-codec"),
) -> Callable[[Any, Any], Any]:
    """A response post-processor (cu.http.state.PostProcessor: (request, response) -> response) that signs
    every response `identify(request, response)` names a result for; others pass untouched. Duck-typed on
    Flask/werkzeug objects (request.args/.headers, response.get_data/.set_data/.headers/.status_code) so
    the hook stays testable without an app. A bad `attest-nonce` turns the response into a BadInput answer, a
    TEE failure into Unavailable (statuses from cu.http.errors; both signed, with key binding). `accept_codec(request)`: the reply codec the request
    asked for (the header by default; AO-Core requests may carry it as a signed tag)."""

    def process(request: Any, response: Any) -> Any:
        result = identify(request, response)
        if result is None:
            return response
        if getattr(response, "is_streamed", False):
            return _streamed(request, response, result)
        status, body, ctype, headers = sign_reply(
            signer, result, response.status_code, response.get_data(),
            response.headers.get("Content-Type", "application/json"),
            attest_nonce=request.args.get("attest-nonce"), accept_codec=accept_codec(request))
        response.status_code = status
        response.set_data(body)
        if ctype is not None:
            response.headers["Content-Type"] = ctype
        for k, v in headers:
            response.headers[k] = v
        return response

    def _streamed(request: Any, response: Any, result: ResultId) -> Any:
        """A streamed result (a large /state) is signed by the SHA-256 its producer computed up front
        (cu/http/state_stream.py); a streamed response without one is not a result body and passes."""
        digest = getattr(response, STREAM_DIGEST_ATTR, None)
        if digest is None:
            return response
        raw = request.args.get("attest-nonce")
        try:
            nonce = parse_nonce(raw) if raw is not None else None
            headers = signer.sign(response.status_code, b"", result, attest_nonce=nonce, digest=digest)
        except (ValueError, EvidenceError) as exc:
            response.close()      # frees what the stream holds (the evaluator's spooled copy)
            status = status_for(BadInput(str(exc)) if isinstance(exc, ValueError) else Unavailable(str(exc)))
            body = json.dumps({"error": str(exc)}).encode()
            out = type(response)(body, status=status, mimetype="application/json")
            for k, v in signer.sign(status, body, result):
                out.headers[k] = v
            return out
        for k, v in headers:
            response.headers[k] = v
        return response

    return process


def sign_reply(signer: ResultSigner, result: ResultId, status: int, body: bytes, ctype: str, *,
               attest_nonce: str | None, accept_codec: str | None
               ) -> tuple[int, bytes, str | None, list[tuple[str, str]]]:
    """The signed form of a result response: (status, body, Content-Type to set or None to keep, headers to set).
    A bad `attest-nonce` becomes a signed BadInput answer, a TEE failure a signed Unavailable one (statuses from
    cu.http.errors). Shared by the post-processor and the hot routes (cu/http/hot.py)."""
    try:
        out = sign_result(signer, status, body, result, attest_nonce=attest_nonce, accept_codec=accept_codec,
                          content_type=ctype)
    except (ValueError, EvidenceError) as exc:
        status = status_for(BadInput(str(exc)) if isinstance(exc, ValueError) else Unavailable(str(exc)))
        err = json.dumps({"error": str(exc)}).encode()
        return status, err, None, signer.sign(status, err, result)
    new_type = None if out.body is body else dict(out.headers).get("Content-Type", ctype)
    return out.status, out.body, new_type, out.headers
