"""Structured field helpers over `http-sfv` (RFC 8941/9651), plus the relaxed forms HyperBEAM peers emit."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from typing import TypeVar

import http_sfv

from cu.codec.errors import CodecError

MAX_FIELD = 1 << 20  # refuse absurd header values before parsing
C = TypeVar("C")


def _bytes(text: str | bytes, what: str) -> bytes:
    if isinstance(text, str):
        try:
            text = text.encode("ascii")
        except UnicodeEncodeError as exc:
            raise CodecError(f"{what}: structured field values are ASCII") from exc
    if len(text) > MAX_FIELD:
        raise CodecError(f"{what}: field value too large")
    return text


def parse_dictionary(text: str | bytes, what: str = "dictionary") -> http_sfv.Dictionary:
    d = http_sfv.Dictionary()
    try:
        d.parse(_bytes(text, what))
    except (ValueError, IndexError, TypeError) as exc:
        raise CodecError(f"{what}: not an RFC 8941 dictionary ({exc.__cause__ or exc})") from exc
    return d


def parse_list(text: str | bytes, what: str = "list") -> http_sfv.List:
    lst = http_sfv.List()
    try:
        lst.parse(_bytes(text, what))
    except (ValueError, IndexError, TypeError) as exc:
        raise CodecError(f"{what}: not an RFC 8941 list ({exc.__cause__ or exc})") from exc
    return lst


def parse_item(text: str | bytes, what: str = "item") -> http_sfv.Item:
    it = http_sfv.Item()
    try:
        it.parse(_bytes(text, what))
    except (ValueError, IndexError, TypeError) as exc:
        raise CodecError(f"{what}: not an RFC 8941 item ({exc.__cause__ or exc})") from exc
    return it


def ser_string(s: str) -> str:
    if any(not (0x20 <= ord(c) < 0x7F) for c in s):
        raise CodecError("sf-string must be printable ASCII")
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ser_bare(v: object) -> str:
    if isinstance(v, bool):
        return "?1" if v else "?0"
    if isinstance(v, int):
        if abs(v) > 999_999_999_999_999:
            raise CodecError("sf-integer out of range")
        return str(v)
    if isinstance(v, bytes):
        return ":" + base64.b64encode(v).decode() + ":"
    if isinstance(v, http_sfv.Token):
        return str(v)
    if isinstance(v, str):
        return ser_string(v)
    raise CodecError(f"cannot serialize {type(v).__name__} as a structured field")


def ser_params(params: list[tuple[str, object]] | dict) -> str:
    items = params.items() if isinstance(params, dict) else params
    return "".join(f";{k}" if v is True else f";{k}={ser_bare(v)}" for k, v in items)


def relaxed_byteseq(text: str, what: str) -> bytes:
    """Decode the inside of `:...:` accepting standard or URL-safe base64, padded or not (ao-core-libs
    writes Content-Digest with base64url, which RFC 8941 does not allow)."""
    t = text.strip()
    if any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_=" for c in t):
        raise CodecError(f"{what}: not base64")
    t = t.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(t + "=" * (-len(t) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CodecError(f"{what}: not base64") from exc


def relaxed_dictionary(text: str, what: str) -> list[tuple[str, str]]:
    """HyperBEAM's `ao-ids` style dictionary (keys may be upper-case: permaweb/HyperBEAM#207): split on
    commas outside quotes, each member on its first '=', strip the quotes."""
    if len(text) > MAX_FIELD:
        raise CodecError(f"{what}: field value too large")
    out: list[tuple[str, str]] = []
    buf, quoted, esc = [], False, False
    members = []
    for c in text:
        if esc:
            buf.append(c)
            esc = False
        elif c == "\\" and quoted:
            esc = True
        elif c == '"':
            quoted = not quoted
            buf.append(c)
        elif c == "," and not quoted:
            members.append("".join(buf))
            buf = []
        else:
            buf.append(c)
    if quoted:
        raise CodecError(f"{what}: unterminated string")
    members.append("".join(buf))
    for m in members:
        m = m.strip()
        if not m:
            raise CodecError(f"{what}: empty member")
        k, sep, v = m.partition("=")
        if not sep or not k:
            raise CodecError(f"{what}: member without '='")
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] == '"':
            v = v[1:-1]
        out.append((k.strip(), v))
    return out


def signature_members(
    signature_input: str | bytes,
    signature: str | bytes,
    component: Callable[[str, http_sfv.Item], tuple[C, str]],
    *,
    max_members: int,
    too_many: str,
    max_components: int,
) -> Iterator[tuple[str, http_sfv.InnerList, list[C], list[str], bytes]]:
    """The members of Signature-Input and Signature (RFC 9421 §4.1, §4.2) paired by label, one at a time:
    (label, inner list, components, their identifiers, signature bytes). `component(label, item)` reads one
    component as (component, identifier). CodecError (`too_many` above `max_members` members) for dictionaries
    that do not parse, labels in only one header, a member that is not an inner list, more than `max_components`
    components, duplicate identifiers or a signature that is not a byte sequence."""
    inputs = parse_dictionary(signature_input, "signature-input")
    sigs = parse_dictionary(signature, "signature")
    if len(inputs) > max_members:
        raise CodecError(too_many)
    if set(inputs) != set(sigs):
        raise CodecError("signature-input and signature labels differ")
    for label, inner in inputs.items():
        if not isinstance(inner, http_sfv.InnerList):
            raise CodecError(f"signature-input {label}: must be an inner list")
        if len(inner) > max_components:
            raise CodecError(f"signature-input {label}: too many components")
        read = [component(label, it) for it in inner]
        idents = [ident for _, ident in read]
        if len(set(idents)) != len(idents):
            raise CodecError(f"signature-input {label}: duplicate component identifiers")
        sig = sigs[label]
        if not isinstance(sig, http_sfv.Item) or not isinstance(sig.value, bytes):
            raise CodecError(f"signature {label}: must be a byte sequence")
        yield label, inner, [c for c, _ in read], idents, sig.value
