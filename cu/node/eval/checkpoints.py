"""Checkpoints of local processes: the engine snapshot of a warm instance (zstd) in the store, with its position,
and the patch cache saved next to it (same seq)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import zstandard

from cu.node.eval.modules import engine
from cu.node.eval.patches import PatchCache
from cu.node.eval.state import ProcState
from cu.node.store import Checkpoint

if TYPE_CHECKING:
    from cu.node.store_sqlite import SqliteStore

log = logging.getLogger("aocu.evaluator")


class Checkpoints:
    def __init__(self, store: SqliteStore, patches: PatchCache, metrics: dict[str, float]) -> None:
        self.store = store
        self.patches = patches
        self.metrics = metrics

    def write(self, st: ProcState) -> None:
        snap = st.instance.snapshot()
        blob = zstandard.ZstdCompressor(level=3).compress(snap.to_bytes())
        self.store.put_checkpoint(Checkpoint(st.pid, st.seq, st.nonce, st.cron_ts, st.last_ts, snap.module_hash,
                                             bytes(snap.memory_root), blob))
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
        try:
            snap = eng.Snapshot.from_bytes(zstandard.ZstdDecompressor().decompress(cp.snapshot))
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
