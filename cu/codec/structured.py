"""HyperBEAM structured messages <-> httpsig fields: ao-types and the header + multipart encoding
(docs/CODECS.md, Structured values; `dev_codec_structured` / `dev_codec_httpsig_conv`).

Structured values: bytes/str (binary), int (integer), float, bool/None (atoms true/false/null),
lists of those (list), nested dicts (messages). Keys are lowercased on the wire.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import http_sfv

from cu.codec import sf
from cu.codec.errors import CodecError
from cu.codec.hashes import b64url, sha256

MAX_HEADER = 4096
MAX_PARTS = 1024
MAX_DEPTH = 16
CRLF = b"\r\n"
_SF_KEY = re.compile(r"^[a-z*][a-z0-9_\-.*]*$")
_LIST_ITEM = re.compile(r"^\(ao-type-([a-z-]+)\) (.*)$", re.S)

Value = object


def _escape_key(k: str) -> str:
    """ao-types keys must be SF keys; other characters are percent-encoded (lowercase hex)."""
    if _SF_KEY.match(k):
        return k
    out = "".join(c if re.match(r"[a-z0-9_\-.*]", c) else "".join(f"%{b:02x}" for b in c.encode()) for c in k)
    if not re.match(r"^[a-z*]", out):
        raise CodecError(f"key {k!r} cannot be an ao-types key (must start with a-z or *)")
    return out


def _unescape_key(k: str) -> str:
    return re.sub(r"%([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), k)


def _scalar(v: Value) -> tuple[str | None, bytes]:
    if isinstance(v, bool):
        return "atom", b"true" if v else b"false"
    if v is None:
        return "atom", b"null"
    if isinstance(v, int):
        return "integer", str(v).encode()
    if isinstance(v, float):
        return "float", repr(v).encode()
    if isinstance(v, str):
        v = v.encode("utf-8")
    if isinstance(v, (bytes, bytearray)):
        return ("empty-binary" if not v else None), bytes(v)
    raise CodecError(f"cannot encode a {type(v).__name__} as a structured value")


def _list(v: list) -> tuple[str, bytes]:
    if not v:
        return "empty-list", b""
    items = []
    for x in v:
        if isinstance(x, (dict, list)):
            raise CodecError("lists of messages or nested lists are not supported by this encoder")
        t, raw = _scalar(x)
        text = raw.decode("utf-8")
        items.append(sf.ser_string(text if t in (None, "empty-binary") else f"(ao-type-{t}) {text}"))
    return "list", ", ".join(items).encode()


def encode(msg: Mapping[str, Value]) -> tuple[dict[str, bytes], bytes]:
    """(fields, body) for a structured message: headers for small values, a deterministic multipart body
    for nested messages and values over 4096 bytes (boundary = b64url(sha256(parts joined by CRLF)))."""
    headers, parts = _encode_level(msg, "", 0)
    fields = dict(headers)
    if not parts:
        return fields, b""
    if len(parts) == 1 and parts[0][0] == "body" and parts[0][2] is None:
        return fields, parts[0][1]
    encoded = [_part(name, content, sub) for name, content, sub in parts]
    boundary = b64url(sha256(CRLF.join(encoded)))
    body = CRLF.join(b"--" + boundary.encode() + CRLF + p for p in encoded) + CRLF + b"--" + boundary.encode() + b"--"
    fields["content-type"] = f'multipart/form-data; boundary="{boundary}"'.encode()
    return fields, body


def _part(name: str, content: bytes, sub: dict[str, bytes] | None) -> bytes:
    disp = b"content-disposition: inline" if name == "body" else b'content-disposition: form-data;name="' + name.encode() + b'"'
    lines = [disp] + [k.encode() + b": " + v for k, v in (sub or {}).items()]
    return CRLF.join(lines) + CRLF + CRLF + content


def _encode_level(msg: Mapping[str, Value], prefix: str, depth: int
                  ) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes, dict[str, bytes] | None]]]:
    if depth > MAX_DEPTH:
        raise CodecError("message nesting too deep")
    headers: list[tuple[str, bytes]] = []
    parts: list[tuple[str, bytes, dict[str, bytes] | None]] = []
    types: dict[str, str] = {}
    if len({k.lower() for k in msg}) != len(msg):
        raise CodecError("message keys differ only by case: not representable in httpsig")
    for key in sorted(msg, key=str.lower):
        k = key.lower()
        v = msg[key]
        path = f"{prefix}/{k}" if prefix else k
        if isinstance(v, Mapping):
            if not v:
                types[k] = "empty-message"
                continue
            sub_headers, sub_parts = _encode_level(v, path, depth + 1)
            sub = dict(sub_headers)
            inner_body = b""
            rest = []
            for p in sub_parts:
                if p[0] == f"{path}/body" and p[2] is None:
                    inner_body = p[1]
                else:
                    rest.append(p)
            parts.append((path, inner_body, sub))
            parts.extend(rest)
            continue
        if isinstance(v, (list, tuple)):
            t, raw = _list(list(v))
        else:
            t, raw = _scalar(v)
        if t:
            types[k] = t
        if t in ("empty-binary", "empty-list"):
            continue
        if len(raw) > MAX_HEADER or b"\n" in raw or b"\r" in raw or k == "body":
            parts.append((path, raw, None))
        else:
            headers.append((k, raw))
    if types:
        headers.append(("ao-types", ", ".join(f"{_escape_key(k)}={sf.ser_string(t)}" for k, t in sorted(types.items())).encode()))
    return headers, parts


# -- decoding -------------------------------------------------------------------------------------
def parse_ao_types(value: bytes) -> dict[str, str]:
    text = value.decode("latin-1")
    try:
        d = sf.parse_dictionary(text, "ao-types")
        out = {}
        for k, item in d.items():
            if not isinstance(item, http_sfv.Item) or not isinstance(item.value, str):
                raise CodecError("ao-types: values must be strings or tokens")
            out[_unescape_key(k)] = str(item.value)
        return out
    except CodecError:
        return {_unescape_key(k.lower()): v for k, v in sf.relaxed_dictionary(text, "ao-types")}


def _typed(t: str | None, raw: bytes) -> Value:
    if t is None or t == "binary":
        return raw
    if t == "empty-binary":
        return b""
    if t == "empty-list":
        return []
    if t == "empty-message":
        return {}
    if t == "integer":
        try:
            return int(raw.decode("ascii").strip())
        except ValueError as exc:
            raise CodecError(f"ao-types integer value {raw[:40]!r} is not an integer") from exc
    if t == "float":
        try:
            return float(raw.decode("ascii").strip())
        except ValueError as exc:
            raise CodecError("ao-types float value is not a number") from exc
    if t == "atom":
        a = raw.decode("utf-8", "replace").strip().strip('"')
        return {"true": True, "false": False, "null": None}.get(a, a)
    if t == "list":
        return _decode_list(raw)
    raise CodecError(f"unknown ao-type {t!r}")


def _decode_list(raw: bytes) -> list:
    text = raw.decode("latin-1")
    try:
        items = [it.value for it in sf.parse_list(text, "ao list")]
        if any(not isinstance(x, (str, int)) or isinstance(x, bool) for x in items):
            raise CodecError("ao list items must be strings")
        strs = [str(x) for x in items]
    except CodecError:
        strs = text.split(",") if text else []  # ao-core-libs writes unquoted items joined by ','
    out = []
    for s in strs:
        m = _LIST_ITEM.match(s)
        out.append(_typed(m.group(1), m.group(2).encode()) if m else s.encode("latin-1"))
    return out


def _split_multipart(body: bytes, boundary: str) -> list[tuple[dict[str, bytes], bytes]]:
    delim = b"--" + boundary.encode()
    if not body.startswith(delim):
        raise CodecError("multipart body does not start with the boundary")
    chunks = body.split(CRLF + delim)
    first = chunks[0][len(delim):]
    chunks = [first] + chunks[1:]
    if len(chunks) > MAX_PARTS + 1:
        raise CodecError("too many multipart parts")
    if not chunks[-1].startswith(b"--"):
        raise CodecError("multipart body has no closing boundary")
    parts = []
    for c in chunks[:-1]:
        if not c.startswith(CRLF):
            raise CodecError("malformed multipart delimiter")
        c = c[2:]
        head, sep, content = c.partition(CRLF + CRLF)
        if not sep:
            if c.endswith(CRLF):  # part without content
                head, content = c[:-2], b""
            else:
                raise CodecError("multipart part without header terminator")
        hdrs: dict[str, bytes] = {}
        for line in head.split(CRLF) if head else []:
            k, s, v = line.partition(b":")
            if not s:
                raise CodecError("malformed multipart part header")
            hdrs[k.strip().decode("latin-1").lower()] = v.strip()
        parts.append((hdrs, content))
    return parts


_NAME = re.compile(rb'name="([^"]*)"')


def decode(fields: Mapping[str, bytes], body: bytes = b"") -> dict:
    """Structured message from httpsig fields and body (inverse of `encode`; tolerant of ao-core-libs)."""
    low = {k.lower(): v for k, v in fields.items() if k.lower() not in ("signature", "signature-input")}
    if "ao-ids" in fields:
        low["ao-ids"] = fields["ao-ids"]
    out = _decode_level(low, 0)
    if isinstance(out, list):
        raise CodecError("top-level message cannot be a numbered list")
    ctype = low.get("content-type", b"").decode("latin-1")
    if body and ctype.lower().startswith("multipart/form-data"):
        m = re.search(r'boundary="?([^";]+)"?', ctype)
        if not m:
            raise CodecError("multipart content-type without boundary")
        out.pop("content-type", None)
        for hdrs, content in _split_multipart(body, m.group(1)):
            disp = hdrs.pop("content-disposition", b"")
            if disp.strip().lower() == b"inline":
                name = low.get("ao-body-key", b"body").decode()
            else:
                nm = _NAME.search(disp)
                if not nm:
                    raise CodecError("multipart part without a name")
                name = nm.group(1).decode("utf-8").lower()
            target = out
            segs = name.split("/")
            if len(segs) > MAX_DEPTH:
                raise CodecError("multipart name nests too deep")
            for seg in segs[:-1]:
                nxt = target.setdefault(seg, {})
                if not isinstance(nxt, dict):
                    raise CodecError(f"multipart part {name} nests under a non-message")
                target = nxt
            leaf = segs[-1]
            if hdrs:
                sub = _decode_level(hdrs, 1)
                if isinstance(sub, list):
                    target[leaf] = sub
                    continue
                if content:
                    sub["body"] = content
                existing = target.get(leaf)
                if isinstance(existing, dict):
                    existing.update(sub)
                else:
                    target[leaf] = sub
            else:
                target[leaf] = content
        _apply_types(out, low)
    elif body:
        out[low.get("ao-body-key", b"body").decode()] = body
    return out


def _decode_level(fields: Mapping[str, bytes], depth: int) -> dict:
    if depth > MAX_DEPTH:
        raise CodecError("message nesting too deep")
    types = parse_ao_types(fields["ao-types"]) if "ao-types" in fields else {}
    # main-era messages: one `ao-type-<key>` header per key
    for k, v in fields.items():
        if k.startswith("ao-type-") and k != "ao-types":
            types.setdefault(k[len("ao-type-"):], v.decode("latin-1").strip().strip('"'))
    out: dict = {}
    for k, v in fields.items():
        if k in ("ao-types", "content-digest", "ao-ids") or k.startswith("ao-type-"):
            continue
        out[k] = _typed(types.get(k), v)
    if "ao-ids" in fields:  # 43-char id keys keep their case here (permaweb/HyperBEAM#207)
        for k, v in sf.relaxed_dictionary(fields["ao-ids"].decode("latin-1"), "ao-ids"):
            out[k] = v.encode("latin-1")
    for k, t in types.items():
        if k not in out and t in ("empty-binary", "empty-list", "empty-message"):
            out[k] = _typed(t, b"")
    if types.get(".") == "list":
        return _numbered_list(out)
    return out


def _numbered_list(d: dict) -> dict | list:  # type: ignore[type-arg]
    """A list carried as a numbered map (`1`, `2`, ... with `.`="list" in ao-types)."""
    try:
        idx = sorted((int(k), v) for k, v in d.items())
    except ValueError as exc:
        raise CodecError("numbered-list message has a non-numeric key") from exc
    if [i for i, _ in idx] != list(range(1, len(idx) + 1)):
        raise CodecError("numbered-list message keys must be 1..N")
    return [v for _, v in idx]


def _apply_types(out: dict, low: Mapping[str, bytes]) -> None:
    types = parse_ao_types(low["ao-types"]) if "ao-types" in low else {}
    for k, t in types.items():
        if k in out and isinstance(out[k], bytes):
            out[k] = _typed(t, out[k])


# -- helpers for receivers that keep the wire form ------------------------------------------------
def encode_ao_types(types: Mapping[str, str]) -> bytes:
    """An `ao-types` value as HyperBEAM's structured codec writes it: keys sorted, `key="type"` (SF strings),
    joined by ", " (ao-core-libs writes SF tokens, `key=type`; `parse_ao_types` reads both)."""
    return ", ".join(f"{_escape_key(k)}={sf.ser_string(t)}" for k, t in sorted(types.items())).encode()


def multipart_boundary(content_type: bytes | None) -> str | None:
    """The boundary of a `multipart/...` content-type, None for any other body."""
    ctype = (content_type or b"").decode("latin-1")
    if not ctype.strip().lower().startswith("multipart/"):
        return None
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        raise CodecError("multipart content-type without boundary")
    return m.group(1)


def body_parts(content_type: bytes | None, body: bytes) -> list[tuple[str | None, dict[str, bytes], bytes]] | None:
    """The parts of a multipart body as (name, part headers other than content-disposition, content), in body
    order; the name is None for the `inline` part and keeps its case otherwise. None when the body is not
    multipart (`content_type` has no multipart boundary)."""
    boundary = multipart_boundary(content_type)
    if boundary is None:
        return None
    out: list[tuple[str | None, dict[str, bytes], bytes]] = []
    for hdrs, content in _split_multipart(body, boundary):
        disp = hdrs.pop("content-disposition", b"")
        if disp.strip().lower() == b"inline":
            out.append((None, hdrs, content))
            continue
        nm = _NAME.search(disp)
        if not nm:
            raise CodecError("multipart part without a name")
        out.append((nm.group(1).decode("utf-8"), hdrs, content))
    return out
