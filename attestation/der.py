"""Minimal DER reader/writer for the few ASN.1 shapes the AMD and Intel certificate extensions use.

`cryptography` hands unknown extensions over as raw bytes; the AMD VCEK extensions are single primitive values and
the Intel SGX extension is a SEQUENCE of (OID, value) pairs, so a strict TLV reader is all that is needed.
"""

from __future__ import annotations

from .errors import ParseError

INTEGER = 0x02
OCTET_STRING = 0x04
OID = 0x06
ENUMERATED = 0x0A
IA5STRING = 0x16
SEQUENCE = 0x30


def read_tlv(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """Return (tag, content, next position); single-byte tags and definite lengths only (DER)."""
    if pos + 2 > len(data):
        raise ParseError("DER: truncated TLV header")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise ParseError("DER: multi-byte tags are not used by these structures")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise ParseError("DER: bad length encoding")
        length = int.from_bytes(data[pos : pos + n], "big")
        if length < 0x80 or (n > 1 and data[pos] == 0):
            raise ParseError("DER: non-minimal length")
        pos += n
    if pos + length > len(data):
        raise ParseError("DER: value runs past the end")
    return tag, data[pos : pos + length], pos + length


def read_single(data: bytes) -> tuple[int, bytes]:
    tag, content, end = read_tlv(data)
    if end != len(data):
        raise ParseError("DER: trailing bytes after value")
    return tag, content


def read_sequence(content: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos < len(content):
        tag, value, pos = read_tlv(content, pos)
        out.append((tag, value))
    return out


def decode_integer(content: bytes) -> int:
    if not content:
        raise ParseError("DER: empty INTEGER")
    if len(content) > 1 and (
        (content[0] == 0 and content[1] < 0x80) or (content[0] == 0xFF and content[1] >= 0x80)
    ):
        raise ParseError("DER: non-minimal INTEGER")
    return int.from_bytes(content, "big", signed=True)


def decode_oid(content: bytes) -> str:
    if not content:
        raise ParseError("DER: empty OID")
    arcs: list[int] = []
    value = 0
    for i, b in enumerate(content):
        if value == 0 and b == 0x80:
            raise ParseError("DER: non-minimal OID arc")
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
        elif i == len(content) - 1:
            raise ParseError("DER: truncated OID")
    first = arcs[0]
    head = [0, first] if first < 40 else ([1, first - 40] if first < 80 else [2, first - 80])
    return ".".join(str(a) for a in head + arcs[1:])


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def encode(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def encode_integer(value: int) -> bytes:
    length = max(1, (value.bit_length() + 8) // 8)
    return encode(INTEGER, value.to_bytes(length, "big", signed=True))


def encode_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1]] + arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return encode(OID, bytes(body))


def encode_sequence(*items: bytes) -> bytes:
    return encode(SEQUENCE, b"".join(items))
