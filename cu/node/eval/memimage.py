"""Linear-memory images as page maps, and the page deltas of incremental checkpoints.

The engine's sparse memory image ("AOMI" v1, native/engine/snapshot.h: size, page count, a bitmap of the
non-zero 64 KiB pages, one zstd frame of those pages in order) is read into `{page index: 64 KiB bytes}` and
written back from one. A delta between two page maps lists the pages whose bytes differ and stores each as
new XOR old: the Lua collector rewrites the mark bits of every live object on each full collection, so nearly
every heap page is written per message, but the XOR of the two versions is almost all zero bytes and
compresses to a few percent of the pages themselves (measured: 22 changed pages, 496 KB as pages, 15 KB as
XOR, zstd level 3).

The node computes and applies deltas in native code (`cu._native.pagedelta`, native/engine/pagedelta.cpp, with
the GIL released); this module is the reference of the same formats (tests/test_pagedelta.py compares them) and
the path of a build without it."""

from __future__ import annotations

import struct

import zstandard

PAGE = 65536
MAGIC = b"AOMI"
_HEAD = struct.Struct("<IQQ")
_ZERO = bytes(PAGE)

Pages = dict[int, bytes]


class ImageError(ValueError):
    """A memory image or delta that cannot be read."""


def decode(image: bytes) -> tuple[int, Pages]:
    """(memory size in bytes, the non-zero pages) of an AOMI v1 image."""
    if len(image) < 4 + _HEAD.size or image[:4] != MAGIC:
        raise ImageError("not an AOMI memory image")
    version, size, count = _HEAD.unpack_from(image, 4)
    if version != 1 or count != (size + PAGE - 1) // PAGE:
        raise ImageError(f"AOMI image version {version} / page count {count} not readable")
    off = 4 + _HEAD.size
    bitmap = image[off:off + (count + 7) // 8]
    if len(bitmap) != (count + 7) // 8:
        raise ImageError("AOMI image truncated in its bitmap")
    present = [p for p in range(count) if bitmap[p >> 3] >> (p & 7) & 1]
    if not present:
        return size, {}
    try:
        body = zstandard.ZstdDecompressor().decompress(image[off + len(bitmap):],
                                                       max_output_size=len(present) * PAGE)
    except zstandard.ZstdError as exc:
        raise ImageError(f"AOMI image body: {exc}") from None
    if len(body) != len(present) * PAGE:
        raise ImageError("AOMI image body does not hold its pages")
    mv = memoryview(body)
    return size, {p: bytes(mv[i * PAGE:(i + 1) * PAGE]) for i, p in enumerate(present)}


def stored_pages(image: bytes) -> int:
    """How many non-zero pages an AOMI v1 image holds (its bitmap's set bits)."""
    if len(image) < 4 + _HEAD.size or image[:4] != MAGIC:
        raise ImageError("not an AOMI memory image")
    count = _HEAD.unpack_from(image, 4)[2]
    off = 4 + _HEAD.size
    return int.from_bytes(image[off:off + (count + 7) // 8], "little").bit_count()


def encode(size: int, pages: Pages, level: int = 3) -> bytes:
    """The AOMI v1 image of a memory of `size` bytes whose non-zero pages are `pages` (zero pages dropped)."""
    count = (size + PAGE - 1) // PAGE
    bitmap = bytearray((count + 7) // 8)
    body = []
    for p in sorted(pages):
        page = pages[p]
        if p >= count:
            raise ImageError(f"page {p} beyond a memory of {size} bytes")
        if page == _ZERO:
            continue
        bitmap[p >> 3] |= 1 << (p & 7)
        body.append(page)
    frame = zstandard.ZstdCompressor(level=level).compress(b"".join(body)) if body else b""
    return MAGIC + _HEAD.pack(1, size, count) + bytes(bitmap) + frame


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(PAGE, "little")


def diff(old: Pages, new: Pages) -> tuple[list[int], bytes]:
    """(indices of the pages that differ, their XORs concatenated in that order): `apply(old, ...) == new`."""
    changed = sorted(p for p in old.keys() | new.keys() if old.get(p, _ZERO) != new.get(p, _ZERO))
    return changed, b"".join(_xor(old.get(p, _ZERO), new.get(p, _ZERO)) for p in changed)


def apply(pages: Pages, changed: list[int], xors: bytes) -> Pages:
    """`pages` with a delta of `diff` applied (a new map; zero pages dropped)."""
    if len(xors) != len(changed) * PAGE:
        raise ImageError("delta holds the wrong number of pages")
    out = dict(pages)
    mv = memoryview(xors)
    for i, p in enumerate(changed):
        page = _xor(out.get(p, _ZERO), mv[i * PAGE:(i + 1) * PAGE].tobytes())
        if page == _ZERO:
            out.pop(p, None)
        else:
            out[p] = page
    return out
