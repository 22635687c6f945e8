"""The `/state` response: a small state in one body; a large one streamed to the client chunk by chunk as the
worker reads it from the evaluator (cu/node/eval/exports.py), with its Content-Length and SHA-256 known up
front, so the response is signed like any other result (cu/http/signing.py signs a streamed body by the
digest the evaluator computed) and neither the worker nor the evaluator holds the whole state in memory."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Response

from cu.node import rpc
from cu.node.client import EvaluatorClient
from cu.node.errors import CoreError, LimitExceeded
from cu.wire.response import ANS104_CODEC

log = logging.getLogger("aocu.http")

STREAM_DIGEST_ATTR = "aocu_stream_sha256"     # a streamed result's SHA-256, for the signing post-processor


def _chunks(client: EvaluatorClient, export: str, length: int, chunk: int) -> Iterator[bytes]:
    off = 0
    try:
        while off < length:
            data = client.state_chunk(export, off, min(chunk, length - off))
            if not data:
                raise LimitExceeded(f"state download ended at byte {off} of {length}")
            off += len(data)
            yield data
    except CoreError as exc:
        # the headers are sent: all that is left is to cut the body short of its Content-Length
        log.warning("state download %s stopped at byte %d of %d: %s", export[:8], off, length, exc.message)
        raise
    finally:
        if off < length:        # the client went away (or the evaluator failed): free the spooled copy
            try:
                client.state_done(export)
            except CoreError:
                pass


def state_response(client: EvaluatorClient, out: rpc.StateReply, chunk: int, reply_codec: str | None) -> Response:
    if out.export is None:
        resp = Response(out.body, mimetype="application/octet-stream")
    else:
        codecs = [c.split(";")[0].strip().lower() for c in (reply_codec or "").split(",")]
        if ANS104_CODEC in codecs:
            # an ANS-104 item signs its data whole: a state this large is only served as a streamed body
            client.state_done(out.export)
            raise LimitExceeded(f"a state of {out.length} bytes is too large for the {ANS104_CODEC} reply codec "
                                f"(at most {chunk}); ask without accept-codec to stream it")
        resp = Response(_chunks(client, out.export, out.length, chunk), mimetype="application/octet-stream",
                        direct_passthrough=True)
        resp.headers["Content-Length"] = str(out.length)
        setattr(resp, STREAM_DIGEST_ATTR, out.digest)
    for k, v in out.headers.items():
        resp.headers[k] = v
    return resp
