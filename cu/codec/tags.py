"""ANS-104 tags: the Apache Avro `array<record{name: bytes, value: bytes}>` block (docs/CODECS.md, Tags)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cu.codec.errors import CodecError

Tag = tuple[bytes, bytes]


@dataclass(frozen=True)
class TagLimits:
    """Limits applied when decoding/encoding a tag block.

    DEFAULT accepts what deployed peers produce (arbundles' 4096-byte block cap, HyperBEAM's 3072-byte
    names/values and empty names/values); STRICT is the ANS-104 text (128 tags, names <= 1024,
    values <= 3072, both non-empty).
    """

    max_tags: int | None = None
    max_tag_bytes: int = 4096
    max_name: int = 3072
    max_value: int = 3072
    allow_empty: bool = True


DEFAULT = TagLimits()
STRICT = TagLimits(max_tags=128, max_tag_bytes=4096, max_name=1024, max_value=3072, allow_empty=False)
# For blocks we produce ourselves from large HyperBEAM-style messages; still bounded.
UNBOUNDED_BLOCK = TagLimits(max_tag_bytes=1 << 24)

_MAX_VARINT = 10  # a 64-bit zig-zag long never needs more than 10 bytes


def _zz(n: int) -> bytes:
    m = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = m & 0x7F
        m >>= 7
        if m:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_long(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    for i in range(_MAX_VARINT):
        if pos >= end:
            raise CodecError("tags: truncated Avro long")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            if i == _MAX_VARINT - 1 and b > 1:
                raise CodecError("tags: Avro long overflows 64 bits")
            return (result >> 1) ^ -(result & 1), pos
    raise CodecError("tags: Avro long longer than 10 bytes")


def encode_tags(tags: Iterable[Tag], limits: TagLimits = DEFAULT) -> bytes:
    """Encode tags as one Avro block (`zz(count) items 0x00`); empty bytes when there are no tags."""
    tags = list(tags)
    if not tags:
        return b""
    if limits.max_tags is not None and len(tags) > limits.max_tags:
        raise CodecError(f"tags: {len(tags)} tags exceed the limit of {limits.max_tags}")
    out = bytearray(_zz(len(tags)))
    for name, value in tags:
        name = _as_bytes(name)
        value = _as_bytes(value)
        _check_tag(name, value, limits)
        out += _zz(len(name)) + name + _zz(len(value)) + value
    out.append(0)
    if len(out) > limits.max_tag_bytes:
        raise CodecError(f"tags: encoded tag block of {len(out)} bytes exceeds {limits.max_tag_bytes}")
    return bytes(out)


def _as_bytes(v: bytes | str) -> bytes:
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise CodecError(f"tags: name/value must be bytes or str, not {type(v).__name__}")


def _check_tag(name: bytes, value: bytes, limits: TagLimits) -> None:
    if len(name) > limits.max_name:
        raise CodecError(f"tags: name of {len(name)} bytes exceeds {limits.max_name}")
    if len(value) > limits.max_value:
        raise CodecError(f"tags: value of {len(value)} bytes exceeds {limits.max_value}")
    if not limits.allow_empty and (not name or not value):
        raise CodecError("tags: empty tag name or value")


def decode_tags(buf: bytes, expected_count: int | None = None, limits: TagLimits = DEFAULT) -> list[Tag]:
    """Decode an Avro tag block. Every length is checked against the bytes that remain, so lying counts
    and sizes fail fast instead of allocating; trailing bytes after the terminating block are refused."""
    buf = bytes(buf)
    end = len(buf)
    if end > limits.max_tag_bytes:
        raise CodecError(f"tags: tag block of {end} bytes exceeds {limits.max_tag_bytes}")
    if end == 0:
        if expected_count:
            raise CodecError(f"tags: header says {expected_count} tags but the tag block is empty")
        return []
    tags: list[Tag] = []
    pos = 0
    while True:
        count, pos = _read_long(buf, pos, end)
        if count == 0:
            break
        if count < 0:
            count = -count
            size, pos = _read_long(buf, pos, end)
            if size < 0 or size > end - pos:
                raise CodecError("tags: Avro block byte size out of range")
        # Each record needs at least two bytes (two zero lengths): bound the count before looping.
        if count > (end - pos) // 2:
            raise CodecError(f"tags: block claims {count} tags but only {end - pos} bytes remain")
        if limits.max_tags is not None and len(tags) + count > limits.max_tags:
            raise CodecError(f"tags: more than {limits.max_tags} tags")
        for _ in range(count):
            n, pos = _read_long(buf, pos, end)
            if n < 0 or n > end - pos:
                raise CodecError("tags: tag name length out of range")
            name = buf[pos : pos + n]
            pos += n
            n, pos = _read_long(buf, pos, end)
            if n < 0 or n > end - pos:
                raise CodecError("tags: tag value length out of range")
            value = buf[pos : pos + n]
            pos += n
            _check_tag(name, value, limits)
            tags.append((name, value))
    if pos != end:
        raise CodecError(f"tags: {end - pos} trailing bytes after the tag array")
    if expected_count is not None and expected_count != len(tags):
        raise CodecError(f"tags: header says {expected_count} tags, block holds {len(tags)}")
    return tags


def normalize_tags(tags: Iterable[tuple[bytes | str, bytes | str]] | Sequence[dict]) -> list[Tag]:
    """Accept (name, value) pairs or {"name", "value"} dicts, as str or bytes."""
    out: list[Tag] = []
    for t in tags:
        if isinstance(t, dict):
            name, value = t.get("name"), t.get("value")
        else:
            try:
                name, value = t
            except (TypeError, ValueError) as exc:
                raise CodecError("tags: each tag must be a (name, value) pair") from exc
        out.append((_as_bytes(name), _as_bytes(value)))
    return out
