"""Checkpoints of local processes: the engine snapshot of a warm instance (zstd) in the store, with its position,
and the patch cache saved next to it (same seq).

Authenticated (cu/node/eval/cacheauth.py): the stored blob is `MAGIC || HMAC || zstd(snapshot)`, the HMAC
covering the process id, position, module hash, memory root and the compressed snapshot. A row whose tag does
not verify (altered on disk, or written before authentication existed) is logged, counted and ignored: the
process is evaluated again from its log, never restored from it.

Incremental (`incremental=True`, the node's `lifecycle = "fast"`): after a full checkpoint, the next ones are
deltas (cu/node/eval/memimage.py: the pages changed since the previous link, as XORs, plus globals and host
state) chained on it, and every `full_every` links (or once the deltas add up to half a full one) a full one
starts a new chain. A delta is sealed like a full checkpoint, under its own kind, its HMAC also covering the
base it belongs to; a restore applies the deltas in order while each names the previous link, so a lost or
rejected link ends the chain there (the log replays the rest). In this mode checkpoints carry no page-Merkle
root (it costs a full hash of memory per checkpoint of a freshly restored instance) and restores trust the
HMAC instead of re-hashing memory. The last evicted states are also kept in memory (compressed,
`evicted_bytes` in total), so a message to a recently evicted process restores without reading the store.

A delta is computed, where the native code allows, in one pass over memory with the new image
(`pagedelta.capture_diff`, level 1: that image only stays in memory, as the next delta's reference and the evicted
state), instead of encoding memory and then decoding both images to diff them: 0.7x the CPU of those two steps on
the lifecycle bench's processes (16 MiB of memory; 8.4-9.0 ms against 12.4-13.5 ms at load 6-7).

With `COW_RESTORES` restores are copy-on-write: the memory image (kept or rebuilt from the stored chain) becomes
a raw page image in a sealed memfd (`cu._native.pagedelta.page_image`, native/engine/pagedelta.cpp) that the
instance maps, so nothing is written into memory now. The image's page digests seed the instance's page-Merkle
tracking: a checkpoint keeps the digests of its memory (a commit, which rehashes only the pages written since the
restore), and an image without them (a chain read from the store) has its non-zero pages hashed when it is built.
It is off by default: measured on an idle 2-CPU machine, 200 processes, 32 warm, an evicted message took
9.5-10.2 ms this way against 8.0-8.3 ms decoding into fresh memory, the copy-on-write faults of the first message
outweighing the saved copy (under load it was the faster way); and a plain restore no longer copies memory before
its first message either (the encoded image is its rollback base, native/engine/instance.cpp). Deltas are
computed and applied in native code too, with the GIL released (memimage.py is the reference of the same formats)."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
import zstandard

from cu import _native
from cu.node.eval import memimage
from cu.node.eval.cacheauth import TAG_SIZE, CacheAuth
from cu.node.eval.modules import engine
from cu.node.eval.patches import PatchCache
from cu.node.eval.state import ProcState
from cu.node.store import Checkpoint

if TYPE_CHECKING:
    from cu.node.store_sqlite import SqliteStore

log = logging.getLogger("aocu.evaluator")

MAGIC = b"AOCU-CP-MAC1\n"
KIND = "checkpoint"
DELTA_MAGIC = b"AOCU-CPD-MAC1\n"
DELTA_KIND = "checkpoint-delta"
FULL_EVERY = 16                 # deltas on one full checkpoint at most
EVICTED_BYTES = 256 << 20       # compressed evicted states kept in memory


def _parts(cp: Checkpoint, body: bytes) -> tuple:
    return (cp.pid, cp.seq, cp.nonce, cp.cron_ts, cp.timestamp, cp.module_hash, bytes(cp.memory_root), body)


def seal(auth: CacheAuth, cp: Checkpoint) -> Checkpoint:
    """`cp` with its snapshot blob prefixed by the magic and the HMAC."""
    tag = auth.tag(KIND, *_parts(cp, cp.snapshot))
    return Checkpoint(cp.pid, cp.seq, cp.nonce, cp.cron_ts, cp.timestamp, cp.module_hash, cp.memory_root,
                      MAGIC + tag + cp.snapshot)


def unseal(auth: CacheAuth, cp: Checkpoint) -> tuple[bytes | None, str]:
    """(the zstd snapshot, "") when the tag verifies, else (None, why)."""
    blob = bytes(cp.snapshot)
    if not blob.startswith(MAGIC):
        return None, "no authentication tag"
    tag, body = blob[len(MAGIC):len(MAGIC) + TAG_SIZE], blob[len(MAGIC) + TAG_SIZE:]
    if not auth.verify(tag, KIND, *_parts(cp, body)):
        return None, "HMAC mismatch"
    return body, ""


def seal_delta(auth: CacheAuth, cp: Checkpoint, base_seq: int) -> Checkpoint:
    tag = auth.tag(DELTA_KIND, base_seq, *_parts(cp, cp.snapshot))
    return Checkpoint(cp.pid, cp.seq, cp.nonce, cp.cron_ts, cp.timestamp, cp.module_hash, cp.memory_root,
                      DELTA_MAGIC + tag + cp.snapshot)


def unseal_delta(auth: CacheAuth, cp: Checkpoint, base_seq: int) -> tuple[bytes | None, str]:
    blob = bytes(cp.snapshot)
    if not blob.startswith(DELTA_MAGIC):
        return None, "no authentication tag"
    tag, body = blob[len(DELTA_MAGIC):len(DELTA_MAGIC) + TAG_SIZE], blob[len(DELTA_MAGIC) + TAG_SIZE:]
    if not auth.verify(tag, DELTA_KIND, base_seq, *_parts(cp, body)):
        return None, "HMAC mismatch"
    return body, ""


@dataclass
class Chain:
    """Where a warm process stands in its checkpoint chain: the full checkpoint it builds on, the last link and
    that link's state (the snapshot the next delta is computed against)."""
    base_seq: int
    seq: int
    snap: Any                 # cu.engine.Snapshot at `seq` (its memory image is the delta reference)
    links: int = 0            # deltas written on the base
    delta_bytes: int = 0      # their compressed bytes together
    full_bytes: int = 0       # the size of a full checkpoint (the base's, then the last link's memory image)
    leaves: bytes = b""       # page-Merkle leaf digests of `snap`'s memory when known (from its checkpoint)


@dataclass
class Evicted:
    """A checkpointed, evicted state kept in memory: restored from here without reading the store."""
    chain: Chain
    position: tuple[int, int, int | None, int]      # seq, nonce, cron_ts, last_ts


def _image(snap: Any) -> bytes:
    """The AOMI memory image of `snap` (cu/engine/snapshot.py keeps the state tuple; the node's checkpoint
    snapshots hold the encoded bytes, not a raw page image)."""
    image = snap._state[1]
    return image if isinstance(image, bytes) else bytes(image.encode())


def _held(kept: Evicted) -> int:
    """Memory an evicted state holds: its compressed image and its page digests."""
    return len(_image(kept.chain.snap)) + len(kept.chain.leaves)


_pd = getattr(_native, "pagedelta", None)      # native deltas and page images (a build without them: Python)
COW_RESTORES = False           # read by each Checkpoints object it builds (module docstring)
_COW_FAILED: list[str] = []     # the last page image that could not be built (logged once as a warning)


def _diff(old: bytes, new: bytes) -> tuple[list[int], bytes]:
    if _pd is not None:
        return _pd.diff(old, new)
    _, a = memimage.decode(old)
    _, b = memimage.decode(new)
    return memimage.diff(a, b)


def _apply(image: bytes, deltas: list[tuple[int, list[int], bytes]]) -> bytes:
    """The AOMI image after the deltas (memory size, changed pages, XORs) in order."""
    if _pd is not None:
        return _pd.apply(image, deltas, 1)
    size, pages = memimage.decode(image)
    for delta_size, changed, xors in deltas:
        pages, size = memimage.apply(pages, changed, xors), delta_size
    return memimage.encode(size, pages, level=1)


def _cow(snap: Any, leaves: bytes = b"") -> Any:
    """`snap` with its memory as a raw page image (restored copy-on-write), or `snap` itself without native help."""
    if _pd is None or getattr(snap, "_image", None) is not None:
        return snap
    mem_size, image, globals_, host = snap._state
    try:
        mapped = _pd.page_image(image, leaves)
    except (ValueError, RuntimeError, OSError) as exc:   # no memfd, /proc not mounted, ...: a plain restore
        (log.warning if not _COW_FAILED else log.debug)(
            "copy-on-write image of a checkpoint unavailable (%s); restoring it plainly", exc)
        _COW_FAILED.append(str(exc))
        del _COW_FAILED[:-1]
        return snap
    return engine().Snapshot(module_hash=snap.module_hash, format=snap.format, memory_root=snap.memory_root,
                             state=(mem_size, mapped, globals_, host))


class Checkpoints:
    def __init__(self, store: SqliteStore, patches: PatchCache, metrics: dict[str, float], *,
                 auth: CacheAuth | None = None, incremental: bool = False, full_every: int = FULL_EVERY,
                 evicted_bytes: int = EVICTED_BYTES) -> None:
        self.store = store
        self.patches = patches
        self.metrics = metrics
        for k in ("cache_rejected", "checkpoint_bytes", "checkpoint_deltas", "restores_evicted"):
            self.metrics.setdefault(k, 0)
        # without an explicit auth (unit tests of the parts) a per-object random key: still never unauthenticated
        self.auth = auth or patches.auth
        self.incremental = incremental
        self.full_every = full_every
        self.evicted_bytes = evicted_bytes
        self._evicted: OrderedDict[str, Evicted] = OrderedDict()
        self._evicted_size = 0
        self._guard = threading.Lock()     # the evicted states: written by the retiring thread, read by loads
        self._cow = COW_RESTORES and _pd is not None and hasattr(engine().Snapshot, "page_image")

    # writing ----------------------------------------------------------------------------------------
    def write(self, st: ProcState) -> None:
        if self.incremental and self._delta_due(st.chain):
            try:
                self._write_delta(st)
            except NotImplementedError:      # a store without incremental checkpoints: full ones only
                self.incremental = False
                self._write_full(st)
        else:
            self._write_full(st)
        st.since_checkpoint = 0
        self.metrics["checkpoints"] += 1
        self.patches.save(st.pid, st.seq)

    def _delta_due(self, chain: Chain | None) -> bool:
        return chain is not None and chain.links < self.full_every and chain.delta_bytes * 2 < chain.full_bytes

    def _snapshot(self, st: ProcState, root: bool) -> tuple[Any, bytes]:
        """(the instance's snapshot, the page digests of its memory or b"" when not known).

        Incremental mode: one page-Merkle commit first, which rehashes only the pages written since the instance
        was restored from a page image (restores seed it with the image's digests). Its digests tell the zero
        pages, so the memory is encoded without reading them (a restored memory is not faulted in page by page),
        they give the next delta without decompressing the new image, and an evicted state keeps them for its
        copy-on-write restore."""
        inst = st.instance
        if not (self.incremental and self._cow) or root or inst.memory_size % memimage.PAGE:
            return inst.snapshot(root=root), b""
        inst.commitment()
        merkle = getattr(inst, "_merkle", None)     # cu.engine keeps the instance's page-Merkle tracking here
        if merkle is None:
            return inst.snapshot(root=False), b""
        leaves = bytes(merkle.leaves())
        return engine().Snapshot(module_hash=inst.module.hash, format=inst.module.format, memory_root=b"",
                                 state=_pd.capture(inst._native, leaves, 1)), leaves

    def _write_full(self, st: ProcState) -> None:
        # incremental mode: no page-Merkle root either (a full hash of memory per eviction; restores trust the HMAC)
        snap, leaves = self._snapshot(st, not self.incremental)
        blob = zstandard.ZstdCompressor(level=3).compress(snap.to_bytes())
        cp = Checkpoint(st.pid, st.seq, st.nonce, st.cron_ts, st.last_ts, snap.module_hash,
                        bytes(snap.memory_root), blob)
        self.store.put_checkpoint(seal(self.auth, cp))
        self.metrics["checkpoint_bytes"] += len(blob)
        if self.incremental:
            st.chain = Chain(base_seq=st.seq, seq=st.seq, snap=snap, full_bytes=len(blob), leaves=leaves)

    def _write_delta(self, st: ProcState) -> None:
        chain: Chain = st.chain
        inst = st.instance
        if not self._cow and hasattr(_pd, "capture_diff") and inst.memory_size % memimage.PAGE == 0:
            # one native pass: the delta and the new image (level 1: it stays in memory, as the next delta's
            # reference and the evicted state) without encoding the memory and then decoding it again
            state, changed, xors = _pd.capture_diff(inst._native, _image(chain.snap), 1)
            snap, leaves = engine().Snapshot(module_hash=inst.module.hash, format=inst.module.format,
                                             memory_root=b"", state=state), b""
        else:
            snap, leaves = self._snapshot(st, False)    # the HMAC authenticates the delta; no memory re-hash
            if chain.leaves and leaves:     # digests of both states: only the changed pages are read
                changed, xors = _pd.diff_known(_image(chain.snap), chain.leaves, inst._native, leaves)
            else:
                changed, xors = _diff(_image(chain.snap), _image(snap))
        mem_size, _, globals_, host = snap._state
        body = zstandard.ZstdCompressor(level=3).compress(msgpack.packb({
            "v": 1, "prev": chain.seq, "size": int(mem_size), "globals": [[n, k, b] for n, k, b in globals_],
            "host": bytes(host), "pages": changed, "xor": xors}, use_bin_type=True))
        cp = Checkpoint(st.pid, st.seq, st.nonce, st.cron_ts, st.last_ts, snap.module_hash, b"", body)
        self.store.put_checkpoint_delta(seal_delta(self.auth, cp, chain.base_seq), chain.base_seq)
        self.metrics["checkpoint_bytes"] += len(body)
        self.metrics["checkpoint_deltas"] += 1
        chain.seq, chain.snap, chain.leaves = st.seq, snap, leaves
        chain.links += 1
        chain.delta_bytes += len(body)
        chain.full_bytes = len(_image(snap))     # about what a full checkpoint would take now

    # evicted states in memory -----------------------------------------------------------------------
    def evicted(self, st: ProcState) -> None:
        """`st` was checkpointed (its chain's last link is its state) and leaves the warm set."""
        chain = st.chain
        if not self.incremental or chain is None or chain.seq != st.seq or st.since_checkpoint:
            return
        with self._guard:
            self._pop(st.pid)
            self._evicted[st.pid] = Evicted(chain, (st.seq, st.nonce, st.cron_ts, st.last_ts))
            self._evicted_size += _held(self._evicted[st.pid])
            while self._evicted_size > self.evicted_bytes and self._evicted:
                _, old = self._evicted.popitem(last=False)
                self._evicted_size -= _held(old)

    def forget(self, pid: str) -> None:
        """Drops the in-memory evicted state of `pid` (the store's chain stays)."""
        with self._guard:
            self._pop(pid)

    def _pop(self, pid: str) -> Evicted | None:
        old = self._evicted.pop(pid, None)
        if old is not None:
            self._evicted_size -= _held(old)
        return old

    # restoring --------------------------------------------------------------------------------------
    def restore(self, st: ProcState) -> None:
        """Restores a freshly built `st` (no instance yet) from its process's latest checkpoint, when there is a
        usable one; otherwise `st.instance` stays None."""
        eng = engine()
        if self.incremental:
            with self._guard:
                kept = self._pop(st.pid)
            if kept is not None:
                try:
                    snap = _cow(kept.chain.snap, kept.chain.leaves) if self._cow else kept.chain.snap
                    inst = eng.Instance.restore(st.module, snap, cow=snap._image is not None, **st.limits)
                    self._adopt(st, inst, kept.position)
                    st.chain = kept.chain
                    self.metrics["restores_evicted"] += 1
                    return
                except eng.EngineError as exc:
                    log.warning("evicted state of %s unusable (%s); reading its checkpoint", st.pid, exc)
        cp = self.store.latest_checkpoint(st.pid)
        if cp is None:
            return
        body, why = unseal(self.auth, cp)
        if body is None:
            self.auth.rejected(f"checkpoint {st.pid}@{cp.seq}", why, "evaluating the process from its log")
            self.metrics["restore_failures"] += 1
            st.instance = None
            return
        try:
            snap = eng.Snapshot.from_bytes(zstandard.ZstdDecompressor().decompress(body))
            if not self.incremental:
                # verify: the restored memory must hash to the commitment stored with the checkpoint
                inst = eng.Instance.restore(st.module, snap, verify=True, **st.limits)
                self._adopt(st, inst, (cp.seq, cp.nonce, cp.cron_ts, cp.timestamp))
                return
            full_bytes = len(body)
            head, snap, links, delta_bytes, broken = self._follow(st.pid, cp, snap)
            mapped = _cow(snap) if self._cow else snap
            inst = eng.Instance.restore(st.module, mapped, cow=mapped._image is not None, **st.limits)
            self._adopt(st, inst, (head.seq, head.nonce, head.cron_ts, head.timestamp))
            # after a broken link the stored chain is unusable beyond it: the next checkpoint starts a new one
            st.chain = Chain(base_seq=cp.seq, seq=head.seq, snap=snap,
                             links=self.full_every if broken else links, delta_bytes=delta_bytes,
                             full_bytes=full_bytes, leaves=bytes(mapped._image.leaves) if mapped is not snap else b"")
        except (eng.EngineError, zstandard.ZstdError, memimage.ImageError, ValueError) as exc:
            log.warning("checkpoint of %s at seq %d unusable (%s); evaluating from the start", st.pid, cp.seq, exc)
            self.metrics["restore_failures"] += 1
            st.instance = None
            st.chain = None

    def _follow(self, pid: str, base: Checkpoint, snap: Any) -> tuple[Checkpoint, Any, int, int, bool]:
        """(last usable link, the snapshot at it, deltas applied, their bytes, whether a link was refused): the
        full checkpoint `base` with its deltas applied in order, up to the first one that is rejected or does
        not follow its predecessor."""
        eng = engine()
        head, prev = base, base.seq
        records: list[tuple[Checkpoint, dict[str, Any]]] = []
        total, broken = 0, False
        for d in self.store.checkpoint_deltas(pid, base.seq):
            broken = True             # until this link is taken
            body, why = unseal_delta(self.auth, d, base.seq)
            if body is None:
                self.auth.rejected(f"checkpoint delta {pid}@{d.seq}", why, "replaying the log from the link before")
                break
            try:
                rec = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(body), raw=False)
            except (zstandard.ZstdError, ValueError) as exc:
                log.warning("checkpoint delta of %s at seq %d unreadable (%s)", pid, d.seq, exc)
                break
            if not isinstance(rec, dict) or rec.get("v") != 1 or rec.get("prev") != prev:
                break       # a link is missing (or foreign): what follows cannot be applied
            records.append((d, rec))
            head, prev, total, broken = d, d.seq, total + len(body), False
        if not records:
            return head, snap, 0, 0, broken
        image = _apply(_image(snap), [(int(rec["size"]), rec["pages"], rec["xor"]) for _, rec in records])
        last = records[-1][1]
        globals_ = [(str(n), int(k), int(b)) for n, k, b in last["globals"]]
        state = (records[-1][1]["size"], image, globals_, bytes(last["host"]))
        return head, eng.Snapshot(module_hash=snap.module_hash, format=snap.format, state=state,
                                  memory_root=b""), len(records), total, broken

    def _adopt(self, st: ProcState, inst: Any, position: tuple[int, int, int | None, int]) -> None:
        st.instance = inst
        st.seq, st.nonce, st.cron_ts, st.last_ts = position
        self.metrics["restores"] += 1
        self.patches.load(st.pid, st.seq)
        last = self.store.log_entry(st.pid, st.nonce)
        st.last_height = last.block_height if last else st.process_height
