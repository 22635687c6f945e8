"""ANS-104 bundles (docs/CODECS.md, Bundles): 32-byte LE count, N x (32-byte LE size, 32-byte id), items."""

from __future__ import annotations

from collections.abc import Iterable

from cu.codec.ans104 import DataItem
from cu.codec.errors import CodecError
from cu.codec.tags import DEFAULT, TagLimits

BUNDLE_TAGS = ((b"Bundle-Format", b"binary"), (b"Bundle-Version", b"2.0.0"))


def build_bundle(items: Iterable[DataItem | bytes]) -> bytes:
    """Serialize items (DataItem or raw item bytes) into a bundle body; headers carry sha256(signature)."""
    raws: list[bytes] = []
    headers = bytearray()
    for it in items:
        item = it if isinstance(it, DataItem) else DataItem.parse(it)
        raw = item.to_bytes()
        raws.append(raw)
        headers += len(raw).to_bytes(32, "little") + item.raw_id
    return len(raws).to_bytes(32, "little") + bytes(headers) + b"".join(raws)


def parse_bundle(body: bytes, *, limits: TagLimits = DEFAULT, check_ids: bool = True) -> list[DataItem]:
    """Parse a bundle body. Sizes must tile the body exactly; with `check_ids` each header id must equal
    the item's id (what arbundles' Bundle.verify checks besides signatures)."""
    body = bytes(body)
    end = len(body)
    if end < 32:
        raise CodecError("bundle shorter than its 32-byte item count")
    count = int.from_bytes(body[:32], "little")
    if count > (end - 32) // 64:
        raise CodecError(f"bundle claims {count} items but has room for at most {(end - 32) // 64} headers")
    pos = 32 + 64 * count
    items: list[DataItem] = []
    for i in range(count):
        h = 32 + 64 * i
        size = int.from_bytes(body[h : h + 32], "little")
        hid = body[h + 32 : h + 64]
        if size > end - pos:
            raise CodecError(f"bundle item {i} claims {size} bytes but only {end - pos} remain")
        item = DataItem.parse(body[pos : pos + size], limits=limits)
        if check_ids and item.raw_id != hid:
            raise CodecError(f"bundle item {i}: header id does not match the item's signature")
        items.append(item)
        pos += size
    if pos != end:
        raise CodecError(f"bundle has {end - pos} trailing bytes after its items")
    return items


def is_bundle(item: DataItem) -> bool:
    tags = {n.lower(): v for n, v in item.tags}
    return tags.get(b"bundle-format") == b"binary" and tags.get(b"bundle-version") == b"2.0.0"


def nested_items(item: DataItem, *, limits: TagLimits = DEFAULT, max_depth: int = 16) -> list[DataItem]:
    """The items of a nested bundle item (its data is a bundle body); CodecError if it is not one."""
    if max_depth <= 0:
        raise CodecError("bundle nesting too deep")
    if not is_bundle(item):
        raise CodecError("item is not a bundle (Bundle-Format: binary, Bundle-Version: 2.0.0)")
    return parse_bundle(item.data, limits=limits)


def walk(items: list[DataItem], *, limits: TagLimits = DEFAULT, max_depth: int = 16) -> Iterable[tuple[int, DataItem]]:
    """Depth-first (depth, item) over a bundle and every nested bundle in it."""
    stack = [(0, it) for it in reversed(items)]
    while stack:
        depth, item = stack.pop()
        yield depth, item
        if is_bundle(item):
            if depth + 1 > max_depth:
                raise CodecError("bundle nesting too deep")
            stack.extend((depth + 1, c) for c in reversed(parse_bundle(item.data, limits=limits)))


def bundle_item(signer: object, items: Iterable[DataItem | bytes], *, tags: Iterable = (), **kw: object) -> DataItem:
    """A data item whose data is a bundle of `items` (a nested bundle), signed by `signer`."""
    return DataItem.create(signer, data=build_bundle(items), tags=list(BUNDLE_TAGS) + list(tags), **kw)  # type: ignore[arg-type]
