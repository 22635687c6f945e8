"""Stored messages served back in either codec, and re-verified from their stored bytes.

A message is stored in the codec it arrived in (items table: `ans104` data item, or `httpsig` signed request,
cu.node.signed_http). Reading it in the other codec goes through the codec's message model
(cu.codec.message), which carries the other codec's signature along: an ANS-104 item becomes HTTP fields plus
its signature as an `ans104@1.0` Signature-Input member (the item is rebuilt byte for byte from them); an
httpsig message becomes an unsigned data item whose tags carry its fields and its Signature/Signature-Input.
Each conversion is checked by converting back; when that does not give the same message, the answer is a
clear `Invalid` instead of a lossy form.
"""

from __future__ import annotations

import re

from cu.codec.ans104 import DataItem
from cu.codec.errors import CodecError
from cu.codec.message import Message
from cu.node.errors import BadInput, Internal, Invalid, NotFound
from cu.node.signed_http import CODEC as HTTPSIG_STORED
from cu.node.signed_http import unframe
from cu.node.store import Store

HTTPSIG = "httpsig@1.0"
ANS104 = "ans104@1.0"
CODECS = (HTTPSIG, ANS104)
ANS104_HEADERS = [("content-type", "application/ans104"), ("codec-device", ANS104)]

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")

Headers = list[tuple[str, str]]


def _stored(store: Store, message_id: str) -> tuple[str, bytes]:
    meta = store.item_meta(message_id)
    raw = store.item_raw(message_id) if meta is not None else None
    if meta is None or raw is None:
        raise NotFound(f"message {message_id} not found on this node")
    return meta.codec, raw


def _http_message(raw: bytes) -> tuple[Headers, bytes, Message]:
    _method, _path, headers, body = unframe(raw)
    try:
        return headers, body, Message.from_http(headers, body)
    except CodecError as exc:
        raise Internal(f"stored httpsig message does not parse: {exc}") from None


def message_in_codec(store: Store, message_id: str, codec: str) -> tuple[Headers, bytes]:
    """The stored message `message_id` as (HTTP headers, body) in `codec`:
    - httpsig@1.0: a message received as httpsig, its signed header lines and body exactly as received; an
      ANS-104 item, its tags and data as fields (data in the body) with the item signature as an ans104@1.0
      commitment in Signature/Signature-Input (re-verifiable; converts back to the same item).
    - ans104@1.0: an ANS-104 item, its bytes (content-type application/ans104); an httpsig message, an unsigned
      item whose tags carry the fields and the signatures (converts back to the same message id).
    NotFound for an unknown id, Invalid when the message has no exact form in `codec`, BadInput for another
    codec."""
    if codec not in CODECS:
        raise BadInput(f"codec {codec!r} is not supported ({', '.join(CODECS)})")
    stored, raw = _stored(store, message_id)
    if stored == HTTPSIG_STORED:
        headers, body, msg = _http_message(raw)
        if codec == HTTPSIG:
            return headers, body
        return list(ANS104_HEADERS), _httpsig_as_ans104(message_id, msg)
    if codec == ANS104:
        return list(ANS104_HEADERS), raw
    return _ans104_as_httpsig(message_id, raw)


def _httpsig_as_ans104(message_id: str, msg: Message) -> bytes:
    def lossy(reason: str) -> Invalid:
        return Invalid(f"message {message_id} was received as httpsig@1.0 and has no lossless ANS-104 form: {reason}")
    try:
        out = msg.to_ans104().to_bytes()
        back = Message.from_ans104(DataItem.parse(out))
    except CodecError as exc:
        raise lossy(str(exc)) from None
    if back.fields != msg.fields:
        raise lossy("its fields do not survive as ANS-104 tags and data")
    if back.id != msg.id or not back.verify(absent_body_ok=True):
        raise lossy("its signatures do not verify in the ANS-104 form")
    return out


def _ans104_as_httpsig(message_id: str, raw: bytes) -> tuple[Headers, bytes]:
    def lossy(reason: str) -> Invalid:
        return Invalid(f"message {message_id} was received as ans104@1.0 and has no lossless httpsig@1.0 form: "
                       f"{reason}")
    try:
        item = DataItem.parse(raw)
        # the data travels in the body: any bytes, any size (a `data` header holds only short single-line text)
        msg = Message.from_ans104(item, data_key="body")
        headers, body = msg.to_http()
    except CodecError as exc:
        raise lossy(str(exc)) from None
    bad = next((n for n, _ in headers if not _TOKEN.match(n)), None)
    if bad is not None:
        raise lossy(f"tag name {bad!r} is not an HTTP header name")
    try:
        again = Message.from_http(headers, body).to_ans104().to_bytes()
    except CodecError as exc:
        raise lossy(str(exc)) from None
    if again != raw:
        raise lossy("its tags do not survive as HTTP headers (names differing only by case, or repeated)")
    return headers, body


def verify_stored(store: Store, message_id: str) -> bool:
    """Re-verifies the stored message from its stored bytes: every signature, and that it is `message_id`."""
    stored, raw = _stored(store, message_id)
    if stored == HTTPSIG_STORED:
        _headers, _body, msg = _http_message(raw)
        try:
            # a covered content-digest without its body was accepted on receipt (cu.node.signed_http)
            return msg.id == message_id and any(c.signed for c in msg.commitments) and \
                msg.verify(absent_body_ok=True)
        except CodecError:
            return False
    try:
        item = DataItem.parse(raw)
        return item.id == message_id and item.verify()
    except CodecError:
        return False
