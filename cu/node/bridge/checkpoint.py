"""Arweave checkpoints in the legacy CU's format (docs/ABI.md (SU API consumed by the CU, and checkpoints); the
legacy CU's servers/cu/src/effects/ao-process.js): an ANS-104 data item whose data is the gzip (level 9) of the
raw linear memory, tagged with the SHA-256 of the uncompressed memory and the evaluation position; the
conversion between raw memory and an engine instance; and the authentication of the engine snapshots the bridge
keeps in DATA-DIR/bridge.sqlite (`seal_snapshot` / `open_snapshot`, with the node's cache key,
cu/node/eval/cacheauth.py)."""

from __future__ import annotations

import hashlib
import logging
import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from cu.codec.ans104 import DataItem
from cu.node.bridge.errors import BridgeTooLarge, StreamInvalid
from cu.node.eval import cacheauth

log = logging.getLogger("aocu.bridge")

WASM_PAGE = 65536
# 16 GiB: the largest heap any Module-Format reports (docs/ABI.md (Module-Format strings))
MAX_MEMORY = 1 << 34
SNAPSHOT_MAGIC = b"AOCU-BRIDGE-SNAP-MAC1\n"


@dataclass(frozen=True)
class CheckpointInfo:
    pid: str
    module: str
    nonce: int
    ordinate: str
    timestamp: int
    block_height: int
    sha256: str
    assignment_id: str | None = None
    hash_chain: str | None = None
    epoch: int | None = None
    cron_interval: str | None = None


def gzip9(data: bytes) -> bytes:
    """gzip level 9 with Node's header (mtime 0, OS byte 3). The deflate stream itself may differ from Node's
    bundled zlib; the SHA-256 tag covers the uncompressed memory, which is what checkpoint readers compare."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def gunzip_bounded(data: bytes, limit: int = MAX_MEMORY) -> bytes:
    d = zlib.decompressobj(47)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise StreamInvalid(f"checkpoint data is not valid gzip: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise BridgeTooLarge(f"checkpoint memory exceeds {limit} bytes")
    if not d.eof:
        raise StreamInvalid("checkpoint data is truncated gzip")
    return out


def checkpoint_tags(info: CheckpointInfo, unit_id: str) -> list[tuple[str, str]]:
    tags = [
        ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Checkpoint"), ("Module", info.module),
        ("Process", info.pid), ("Nonce", str(info.nonce)), ("Timestamp", str(info.timestamp)),
        ("Block-Height", str(info.block_height)), ("Content-Type", "application/octet-stream"),
        ("SHA-256", info.sha256), ("Content-Encoding", "gzip"), ("Unit-Identifier", unit_id),
        ("Ordinate", info.ordinate),
    ]
    if info.assignment_id:
        tags.append(("Assignment", info.assignment_id))
    if info.hash_chain:
        tags.append(("Hash-Chain", info.hash_chain))
    if info.epoch is not None:
        tags.append(("Epoch", str(info.epoch)))
    if info.cron_interval:
        tags.append(("Cron-Interval", info.cron_interval))
    return tags


def build_checkpoint(memory: bytes, info: CheckpointInfo, signer: Any, unit_id: str | None = None) -> DataItem:
    if hashlib.sha256(memory).hexdigest() != info.sha256:
        raise ValueError("CheckpointInfo.sha256 does not match the memory")
    return DataItem.create(signer, data=gzip9(memory), tags=checkpoint_tags(info, unit_id or str(uuid.uuid4())))


def parse_info(tags: list[tuple[str, str]]) -> CheckpointInfo:
    t: dict[str, str] = {}
    for n, v in tags:
        t.setdefault(n, v)
    try:
        if t.get("Type") != "Checkpoint" or t.get("Data-Protocol") != "ao":
            raise ValueError("not an ao Checkpoint")
        if t.get("Content-Encoding", "gzip") != "gzip":
            raise ValueError(f"unsupported Content-Encoding {t.get('Content-Encoding')!r}")
        return CheckpointInfo(
            pid=t["Process"], module=t["Module"], nonce=int(t["Nonce"]), ordinate=t.get("Ordinate", t["Nonce"]),
            timestamp=int(t["Timestamp"]), block_height=int(t["Block-Height"]), sha256=t["SHA-256"].lower(),
            assignment_id=t.get("Assignment"), hash_chain=t.get("Hash-Chain"),
            epoch=int(t["Epoch"]) if t.get("Epoch") else None, cron_interval=t.get("Cron-Interval"))
    except (KeyError, ValueError) as exc:
        raise StreamInvalid(f"malformed checkpoint tags: {exc}") from None


def read_checkpoint(data: bytes, info: CheckpointInfo, limit: int = MAX_MEMORY) -> bytes:
    """The raw memory of a checkpoint, verified against its SHA-256 tag."""
    memory = gunzip_bounded(data, limit)
    digest = hashlib.sha256(memory).hexdigest()
    if digest != info.sha256:
        raise StreamInvalid(f"checkpoint of {info.pid} at nonce {info.nonce}: SHA-256 of the memory is "
                               f"{digest}, tag says {info.sha256}")
    return memory


def encode_memory_image(memory: bytes) -> bytes:
    """The engine's sparse memory image ("AOMI" v1: size, page count, bitmap of non-zero pages, one zstd stream of
    those pages; native/engine/snapshot.cpp)."""
    size = len(memory)
    pages = (size + WASM_PAGE - 1) // WASM_PAGE
    bitmap = bytearray((pages + 7) // 8)
    zero = bytes(WASM_PAGE)
    mv = memoryview(memory)
    cctx = zstandard.ZstdCompressor(level=3)
    chunks = cctx.chunker(chunk_size=1 << 20)
    out = [b"AOMI", struct.pack("<IQQ", 1, size, pages)]
    body: list[bytes] = []
    for p in range(pages):
        page = mv[p * WASM_PAGE:(p + 1) * WASM_PAGE]
        if page == zero[:len(page)]:
            continue
        bitmap[p // 8] |= 1 << (p % 8)
        body.extend(chunks.compress(page))
    body.extend(chunks.finish())
    return b"".join(out) + bytes(bitmap) + b"".join(body)


def instance_from_memory(module: Any, memory: bytes, **limits: Any) -> Any:
    """A fresh instance of `module` whose linear memory is `memory` — what the legacy loader does with a
    checkpoint: instantiate (globals, host state of a fresh instance), then copy the memory in (docs/ABI.md
    (Instance lifecycle)).
    Needs an engine API taking raw memory; until `cu.engine` has one this goes through `Snapshot`'s state tuple."""
    from cu.engine import Instance, Snapshot

    if len(memory) % WASM_PAGE:
        raise StreamInvalid("checkpoint memory is not a whole number of 64 KiB pages")
    fresh = Instance(module, **limits)
    base = fresh.snapshot()
    _, _, globals_, host = base._state
    snap = Snapshot(module_hash=module.hash, format=module.format,
                    state=(len(memory), encode_memory_image(memory), globals_, host), memory_root=b"")
    return Instance.restore(module, snap, **limits)


# -- snapshots in bridge.sqlite ----------------------------------------------------------------------------------
def seal_snapshot(data_dir: str | Path, pid: str, progress_json: str, blob: bytes) -> bytes:
    """`blob` prefixed with the magic and an HMAC over the process id, its position and the snapshot, when the
    node registered a cache key for `data_dir` (a bridge built alone, in tests, keeps the plain blob)."""
    auth = cacheauth.for_dir(data_dir)
    if auth is None:
        return blob
    return SNAPSHOT_MAGIC + auth.tag("bridge-snapshot", pid, progress_json, blob) + blob


def open_snapshot(data_dir: str | Path, pid: str, progress_json: str, stored: bytes) -> bytes | None:
    """The snapshot of a stored blob, or None (logged and counted) when its tag does not verify: the process
    is then evaluated again from its scheduler, never restored from altered state."""
    auth = cacheauth.for_dir(data_dir)
    if auth is None:
        return stored
    n = len(SNAPSHOT_MAGIC)
    if not stored.startswith(SNAPSHOT_MAGIC):
        why = "no authentication tag"
    elif auth.verify(stored[n:n + cacheauth.TAG_SIZE], "bridge-snapshot", pid, progress_json,
                     stored[n + cacheauth.TAG_SIZE:]):
        return stored[n + cacheauth.TAG_SIZE:]
    else:
        why = "HMAC mismatch"
    auth.rejected(f"bridge snapshot of {pid}", why, "evaluating the process again from its scheduler")
    return None
