"""The one message model both codecs convert to and from (docs/CODECS.md, httpsig@1.0).

A `Message` is an ordered map of field name -> bytes (the wire-level values: HTTP header values or
ANS-104 tag values, plus `body`/`data`) and a list of commitments. Keeping wire values means every
commitment can be re-verified after any number of conversions:

- httpsig -> ANS-104: the fields become tags (the body becomes the item data, `ao-data-key: body`) and the
  httpsig commitments ride along as `signature` / `signature-input` tags; the item is unsigned unless a
  signer is given. Back from ANS-104 they are httpsig commitments again, so the message id is unchanged.
- ANS-104 -> httpsig: the tags and data become fields and the item signature travels as a
  Signature-Input member with `commitment-device="ans104@1.0"` and the raw tag block, target and anchor,
  so the original item is rebuilt byte for byte (same id) on the way back.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping

from cu.codec import httpsig, structured
from cu.codec.ans104 import DataItem
from cu.codec.commitment import (
    ANS104_TYPE_NUMBERS,
    ANS104_TYPES,
    DEVICE_ANS104,
    DEVICE_HTTPSIG,
    HMAC_TYPE,
    Commitment,
    accumulate,
)
from cu.codec.errors import CodecError
from cu.codec.hashes import b64url, b64url_decode
from cu.codec.tags import DEFAULT, TagLimits, decode_tags

DATA_KEY_TAG = "ao-data-key"
CARRIER_TAGS = ("signature", "signature-input")
MAX_HEADER_VALUE = 4096


def _b(v: bytes | str) -> bytes:
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise CodecError(f"message field values are bytes or str, not {type(v).__name__}")


class Message:
    def __init__(self, fields: Mapping[str, bytes | str] | None = None,
                 commitments: Iterable[Commitment] = ()) -> None:
        self.fields: dict[str, bytes] = {}
        for k, v in (fields or {}).items():
            if not isinstance(k, str) or not k:
                raise CodecError("message field names must be non-empty strings")
            self.fields[k] = _b(v)
        self.commitments: list[Commitment] = list(commitments)

    # -- identity --------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """Sum (mod 2^256) of the signed commitment ids; with none, the HMAC (unsigned) id."""
        signed = [c for c in self.commitments if c.signed]
        if signed:
            return b64url(accumulate(c.raw_id for c in signed))
        for c in self.commitments:
            if c.type == HMAC_TYPE:
                return c.id
        return self.unsigned_id()

    def unsigned_id(self, hmac_key: str = "ao") -> str:
        fields, made = httpsig.commit(self.fields, None, hmac_key=hmac_key)
        return made[0].id

    def get(self, name: str) -> bytes | None:
        if name in self.fields:
            return self.fields[name]
        low = name.lower()
        for k, v in self.fields.items():
            if k.lower() == low:
                return v
        return None

    # -- committing and verifying ----------------------------------------------------------------
    def commit(self, key: object | None = None, *, device: str = DEVICE_HTTPSIG, **kw: object) -> Message:
        """Add commitments in place and return self. httpsig@1.0: `cu.codec.httpsig.commit` options.
        ans104@1.0: sign the ANS-104 form of the message with `key` (any ANS-104 signer)."""
        if device == DEVICE_HTTPSIG:
            self.fields, made = httpsig.commit(self.fields, key, **kw)  # type: ignore[arg-type]
            self.commitments.extend(made)
        elif device == DEVICE_ANS104:
            if key is None:
                raise CodecError("ans104@1.0 commitments need a signer")
            item = self._build_item(DEFAULT).signed_by(key)  # type: ignore[arg-type]
            self.commitments.append(_ans104_commitment(item, self._data_key()))
        else:
            raise CodecError(f"unknown commitment device {device}")
        return self

    def verify_all(self, *, absent_body_ok: bool = False) -> list[tuple[Commitment, bool]]:
        """Each commitment with its verdict. `absent_body_ok`: see `cu.codec.httpsig.verify_commitment`."""
        out = []
        for c in self.commitments:
            if c.device == DEVICE_HTTPSIG:
                ok = httpsig.verify_commitment(self.fields, c, absent_body_ok=absent_body_ok)
            elif c.device == DEVICE_ANS104:
                ok = self._verify_ans104(c)
            else:
                raise CodecError(f"unknown commitment device {c.device}")
            out.append((c, ok))
        return out

    def verify(self, *, absent_body_ok: bool = False) -> bool:
        """True iff there is at least one commitment and every commitment verifies."""
        results = self.verify_all(absent_body_ok=absent_body_ok)
        return bool(results) and all(ok for _, ok in results)

    def committed_keys(self, *, signed_only: bool = True) -> set[str]:
        """Field names (as stored) covered by at least one commitment (signed ones only by default).
        `body` counts as covered when `content-digest` is. Call after `verify()`: coverage says nothing
        about validity."""
        low = {k.lower(): k for k in self.fields}
        covered: set[str] = set()
        for c in self.commitments:
            if signed_only and not c.signed:
                continue
            if c.device == DEVICE_ANS104 and isinstance(c.item, DataItem):
                names = [k.lower() for k in _fields_from_item(c.item, _param_data_key(c))[0]]
            else:
                names = [x.lstrip("@").lower() for x in c.components]
            for n in names:
                if n in low:
                    covered.add(low[n])
                if n == "content-digest" and "body" in low:
                    covered.add(low["body"])
        return covered

    def uncommitted_keys(self, *, signed_only: bool = True) -> list[str]:
        """Fields no commitment covers: anyone on the path could have added or changed them."""
        covered = self.committed_keys(signed_only=signed_only)
        return [k for k in self.fields if k not in covered]

    def only_committed(self, *, signed_only: bool = True) -> Message:
        """A copy holding only the committed fields (HyperBEAM's `with_only_committed`)."""
        covered = self.committed_keys(signed_only=signed_only)
        return Message({k: v for k, v in self.fields.items() if k in covered}, self.commitments)

    def _verify_ans104(self, c: Commitment) -> bool:
        item = c.item
        if not isinstance(item, DataItem):
            return False
        if not item.verify():
            return False
        # the fields must say what the signed item says
        expected = _fields_from_item(item, _param_data_key(c))[0]
        return all(self.get(k) == v for k, v in expected.items())

    # -- ANS-104 ---------------------------------------------------------------------------------
    @classmethod
    def from_ans104(cls, item: DataItem | bytes, *, limits: TagLimits = DEFAULT,
                    data_key: str | None = None) -> Message:
        """The message an item stands for. `data_key` names the field that holds the item's data when the item
        has no `ao-data-key` tag (default `data`); `body` keeps data that cannot be an HTTP header (binary,
        multi-line, over 4096 bytes) in the httpsig body. The ans104 commitment records it (`data-key`), so
        the item is still rebuilt byte for byte."""
        if not isinstance(item, DataItem):
            item = DataItem.parse(item, limits=limits)
        if data_key is not None and (data_key in ("", DATA_KEY_TAG) or data_key.lower() in CARRIER_TAGS):
            raise CodecError(f"field {data_key!r} cannot hold the item data")
        if data_key is not None and not item.data:
            data_key = None     # empty data is no field at all under any key
        if data_key is not None and any(n.decode("utf-8", "replace").lower() == data_key.lower() for n, _ in item.tags):
            raise CodecError(f"the item has a tag named {data_key!r}: its data cannot go to that field")
        fields, carried = _fields_from_item(item, data_key)
        msg = cls(fields)
        if carried:
            try:
                msg.commitments.extend(_decode_carried(carried, msg.fields))
            except CodecError:
                if not item.is_signed:
                    raise
                # a signed item that merely has tags with these names: keep them as ordinary fields
                msg.fields["signature-input"], msg.fields["signature"] = carried
        if item.is_signed:
            msg.commitments.append(_ans104_commitment(item, _data_key_of(item, data_key)))
        return msg

    def to_ans104(self, signer: object | None = None, *, limits: TagLimits = DEFAULT) -> DataItem:
        """The ANS-104 form. An unchanged ans104-committed message gives back its original item; otherwise
        a new item (signed by `signer`, else unsigned) carrying any httpsig commitments as tags."""
        for c in self.commitments:
            if c.device == DEVICE_ANS104 and isinstance(c.item, DataItem) and signer is None and \
                    self._verify_fields_match(c.item, _param_data_key(c)):
                return c.item
        item = self._build_item(limits)
        return item.signed_by(signer) if signer is not None else item  # type: ignore[arg-type]

    def _verify_fields_match(self, item: DataItem, data_key: str | None = None) -> bool:
        expected = _fields_from_item(item, data_key)[0]
        ours = {k.lower() for k in self.fields} - set(CARRIER_TAGS)
        if ours != {k.lower() for k in expected}:
            return False
        return all(self.get(k) == v for k, v in expected.items())  # httpsig lowercases names

    def _data_key(self) -> str:
        if "data" in self.fields:
            return "data"
        return "body" if "body" in self.fields else "data"

    def _build_item(self, limits: TagLimits) -> DataItem:
        data_key = self._data_key()
        tags: list[tuple[bytes, bytes]] = []
        target = anchor = None
        for k, v in self.fields.items():
            if k == data_key:
                continue
            if k.lower() in CARRIER_TAGS or k.lower() == DATA_KEY_TAG:
                raise CodecError(f"field {k!r} is reserved in the ANS-104 mapping")
            tags.append((k.encode(), v))
        if data_key != "data":
            tags.append((DATA_KEY_TAG.encode(), data_key.encode()))
        foreign = [c for c in self.commitments if c.device == DEVICE_HTTPSIG]
        if foreign:
            si, sg = httpsig.encode_headers(foreign)
            tags += [(b"signature-input", si.encode()), (b"signature", sg.encode())]
        return DataItem.create(None, data=self.fields.get(data_key, b""), tags=tags, target=target, anchor=anchor,
                               limits=limits)

    # -- HTTP (httpsig@1.0) ----------------------------------------------------------------------
    @classmethod
    def from_http(cls, headers: Iterable[tuple[str, str | bytes]] | Mapping[str, str | bytes],
                  body: bytes = b"") -> Message:
        """Fields from the headers (lowercased; repeated lines joined with ', ') and the body; commitments
        from Signature-Input/Signature. Transport headers are the caller's to strip."""
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        fields: dict[str, bytes] = {}
        for k, v in pairs:
            k = k.lower()
            v = v if isinstance(v, bytes) else v.encode("latin-1", "strict") if _latin1(v) else v.encode("utf-8")
            fields[k] = fields[k] + b", " + v.strip() if k in fields else v.strip()
        si = fields.pop("signature-input", None)
        sg = fields.pop("signature", None)
        if body:
            fields["body"] = bytes(body)
        msg = cls(fields)
        if (si is None) != (sg is None):
            raise CodecError("signature-input and signature must come together")
        if si is not None and sg is not None:
            msg.commitments.extend(_decode_carried((si, sg), msg.fields))
        return msg

    def to_http(self) -> tuple[list[tuple[str, str]], bytes]:
        """(headers, body). Every field but `body` must be a valid header value."""
        headers = []
        for k, v in self.fields.items():
            if k == "body":
                continue
            if k.lower() in CARRIER_TAGS:
                raise CodecError(f"field {k!r} collides with the httpsig signature headers")
            if len(v) > MAX_HEADER_VALUE or any(b < 0x20 and b != 0x09 or b == 0x7F for b in v):
                raise CodecError(f"field {k!r} cannot be an HTTP header (binary or > {MAX_HEADER_VALUE} bytes)")
            headers.append((k.lower(), v.decode("latin-1")))
        if self.commitments:
            si, sg = httpsig.encode_headers(self.commitments)
            headers += [("signature-input", si), ("signature", sg)]
        return headers, self.fields.get("body", b"")

    # -- structured (ao-types) view -------------------------------------------------------------
    @classmethod
    def from_structured(cls, msg: Mapping[str, object]) -> Message:
        """Encode a structured message (ints, floats, atoms, lists, nested maps) the way HyperBEAM's
        httpsig codec does: headers + ao-types, multipart body for nested/large values."""
        fields, body = structured.encode(msg)
        if body:
            fields["body"] = body
        return cls(fields)

    def structured(self) -> dict:
        """Typed view of the message (ao-types applied, multipart body split into nested maps)."""
        fields = {k: v for k, v in self.fields.items() if k != "body"}
        return structured.decode(fields, self.fields.get("body", b""))

    # -- storage ---------------------------------------------------------------------------------
    def to_json(self) -> dict:
        """Lossless JSON form for storage (bytes as base64)."""
        return {
            "fields": [[k, base64.b64encode(v).decode()] for k, v in self.fields.items()],
            "commitments": [_commitment_json(c) for c in self.commitments],
        }

    @classmethod
    def from_json(cls, obj: dict) -> Message:
        try:
            msg = cls({k: base64.b64decode(v, validate=True) for k, v in obj["fields"]})
            for c in obj["commitments"]:
                msg.commitments.append(_commitment_from_json(c))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CodecError(f"stored message is malformed: {exc}") from exc
        return msg

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Message:
        try:
            obj = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise CodecError(f"stored message is not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise CodecError("stored message must be a JSON object")
        return cls.from_json(obj)

    def __repr__(self) -> str:
        return f"Message(fields={list(self.fields)}, commitments={[c.type for c in self.commitments]})"


def _latin1(s: str) -> bool:
    try:
        s.encode("latin-1")
        return True
    except UnicodeEncodeError:
        return False


def _data_key_of(item: DataItem, default: str | None = None) -> str:
    """The field holding the item's data: its `ao-data-key` tag, else `default` (else `data`)."""
    for n, v in item.tags:
        if n.decode("utf-8", "replace").lower() == DATA_KEY_TAG:
            return v.decode("utf-8", "replace")
    return default or "data"


def _param_data_key(c: Commitment) -> str | None:
    """The `data-key` an ans104 commitment records (None: the default, `data`)."""
    for k, v in c.params:
        if k == "data-key" and isinstance(v, str):
            return v
    return None


def _fields_from_item(item: DataItem, default_data_key: str | None = None
                      ) -> tuple[dict[str, bytes], tuple[bytes, bytes] | None]:
    """Fields an item stands for, and the carried (signature-input, signature) tag values if any. The data goes
    to the field its `ao-data-key` tag names, else `default_data_key` (else `data`)."""
    fields: dict[str, bytes] = {}
    si = sg = None
    data_key = default_data_key or "data"
    for n, v in item.tags:
        name = n.decode("utf-8", "replace")
        low = name.lower()
        if low == "signature-input" and si is None:
            si = v
            continue
        if low == "signature" and sg is None:
            sg = v
            continue
        if low == DATA_KEY_TAG:
            data_key = v.decode("utf-8", "replace")
            continue
        if name not in fields:  # duplicate tag names: the first wins here; the item keeps them all
            fields[name] = v
    if item.data or data_key != "data":
        fields[data_key] = item.data
    carried = (si, sg) if si is not None and sg is not None else None
    if (si is None) != (sg is None):  # only one of the pair: they are ordinary fields
        fields.setdefault("signature-input" if si is not None else "signature", si if si is not None else sg)
    return fields, carried


def _ans104_commitment(item: DataItem, data_key: str = "data") -> Commitment:
    fields = _fields_from_item(item, data_key)[0]
    params: list[tuple[str, object]] = [("data-key", data_key)] if data_key != "data" else []
    return Commitment(DEVICE_ANS104, ANS104_TYPES.get(item.signature_type, f"ans104-type-{item.signature_type}"),
                      item.signature, list(fields), keyid=b64url(item.owner), committer=item.owner_address,
                      params=params, item=item)


def _decode_carried(pair: tuple[bytes, bytes], fields: dict[str, bytes]) -> list[Commitment]:
    si, sg = pair
    out = []
    for c in httpsig.decode_headers(si.decode("latin-1"), sg.decode("latin-1")):
        if c.device == DEVICE_ANS104:
            c = _rebuild_ans104(c, fields)
        out.append(c)
    return out


def _rebuild_ans104(c: Commitment, fields: dict[str, bytes]) -> Commitment:
    p = dict(c.params)
    try:
        sig_type = int(p.get("signature-type", ANS104_TYPE_NUMBERS.get(c.type, 0)))
        owner = httpsig._decode_key(str(p["keyid"]))
        raw_tags = b64url_decode(str(p.get("original-tags", "")))
        target = b64url_decode(str(p["target"])) if "target" in p else None
        anchor = b64url_decode(str(p["anchor"])) if "anchor" in p else None
    except (KeyError, ValueError, TypeError) as exc:
        raise CodecError(f"ans104 commitment in signature-input is malformed: {exc}") from exc
    data_key = str(p.get("data-key", "data"))
    tags = decode_tags(raw_tags)
    item = DataItem(sig_type, c.signature, owner, target, anchor, tags, fields.get(data_key, b""), raw_tags)
    return _ans104_commitment(item, data_key)


def _commitment_json(c: Commitment) -> dict:
    out: dict = {"device": c.device, "type": c.type, "signature": base64.b64encode(c.signature).decode()}
    if c.device == DEVICE_ANS104 and isinstance(c.item, DataItem):
        out["item"] = base64.b64encode(c.item.to_bytes()).decode()
        out["params"] = [[k, v] for k, v in c.params]
        return out
    out.update(committed=c.committed, keyid=c.keyid, committer=c.committer, components=c.components,
               label=c.label, params=[[k, _param_json(v)] for k, v in c.params])
    return out


def _param_json(v: object) -> object:
    import http_sfv

    if isinstance(v, http_sfv.Token):
        return {"token": str(v)}
    if isinstance(v, bytes):
        return {"bytes": base64.b64encode(v).decode()}
    return v


def _param_from_json(v: object) -> object:
    import http_sfv

    if isinstance(v, dict):
        if "token" in v:
            return http_sfv.Token(v["token"])
        if "bytes" in v:
            return base64.b64decode(v["bytes"])
        raise CodecError("bad stored parameter")
    return v


def _commitment_from_json(o: dict) -> Commitment:
    sig = base64.b64decode(o["signature"], validate=True)
    if o["device"] == DEVICE_ANS104:
        item = DataItem.parse(base64.b64decode(o["item"], validate=True))
        data_key = dict((k, v) for k, v in o.get("params", [])).get("data-key", "data")
        return _ans104_commitment(item, data_key)
    return Commitment(o["device"], o["type"], sig, list(o["committed"]), keyid=o.get("keyid"),
                      committer=o.get("committer"), params=[(k, _param_from_json(v)) for k, v in o["params"]],
                      components=list(o["components"]), label=o.get("label"))
