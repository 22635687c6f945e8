"""Checkpoints of local processes: the engine snapshot of a warm instance (zstd) in the store, with its position,
and the patch cache saved next to it (same seq).

Authenticated (cu/node/eval/cacheauth.py): the stored blob is `MAGIC || HMAC || zstd(snapshot)`, the HMAC
covering the process id, position, module hash, memory root and the compressed snapshot. A row whose tag does
not verify (altered on disk, or written before authentication existed) is logged, counted and ignored: the
process is evaluated again from its log, never restored from it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import zstandard

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


class Checkpoints:
    def __init__(self, store: SqliteStore, patches: PatchCache, metrics: dict[str, float], *,
                 auth: CacheAuth | None = None) -> None:
        self.store = store
        self.patches = patches
        self.metrics = metrics
        self.metrics.setdefault("cache_rejected", 0)
        # without an explicit auth (unit tests of the parts) a per-object random key: still never unauthenticated
        self.auth = auth or patches.auth

    def write(self, st: ProcState) -> None:
        snap = st.instance.snapshot()
        blob = zstandard.ZstdCompressor(level=3).compress(snap.to_bytes())
        cp = Checkpoint(st.pid, st.seq, st.nonce, st.cron_ts, st.last_ts, snap.module_hash,
                        bytes(snap.memory_root), blob)
        self.store.put_checkpoint(seal(self.auth, cp))
        st.since_checkpoint = 0
        self.metrics["checkpoints"] += 1
        self.patches.save(st.pid, st.seq)

    def restore(self, st: ProcState) -> None:
        """Restores a freshly built `st` (no instance yet) from its process's latest checkpoint, when there is a
        usable one; otherwise `st.instance` stays None."""
        eng = engine()
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
            # verify: the restored memory must hash to the commitment stored with the checkpoint
            st.instance = eng.Instance.restore(st.module, snap, verify=True, **st.limits)
            st.seq, st.nonce, st.cron_ts, st.last_ts = cp.seq, cp.nonce, cp.cron_ts, cp.timestamp
            self.metrics["restores"] += 1
            self.patches.load(st.pid, cp.seq)
            last = self.store.log_entry(st.pid, cp.nonce)
            st.last_height = last.block_height if last else st.process_height
        except (eng.EngineError, zstandard.ZstdError) as exc:
            log.warning("checkpoint of %s at seq %d unusable (%s); evaluating from the start", st.pid, cp.seq, exc)
            self.metrics["restore_failures"] += 1
            st.instance = None
