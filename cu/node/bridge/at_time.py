"""Reads of a bridged process at a point in its history (legacy `GET /state/{pid}?to=`, `POST /dry-run?to=`).

The point is a timestamp (every message scheduled at or before it, and the crons due before it) or a scheduled
message (up to and including it). As the legacy CU does, evaluation starts from the nearest known state at or
before the point and replays forward: the warm state when it has not passed the point (evaluated first up to the
point's last scheduled message for good, which is ordinary progress), else the stored engine snapshot when it has
not, else the start. Whatever lies between that state and the point (the crons after its last message, or a
replay) is evaluated on a throwaway instance: crons up to a future timestamp are never committed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cu.node import legacy
from cu.node.bridge.errors import BridgeNotFound
from cu.node.bridge.remote import Progress
from cu.node.eval.modules import engine
from cu.node.eval.runner import dry_run_on

if TYPE_CHECKING:
    from cu.node.bridge.service import BridgeService


@dataclass
class Point:
    instance: Any
    module: Any
    env: bytes
    limits: dict[str, Any]
    progress: Progress


def _not_past(p: Progress, nonce: int | None, ts: int) -> bool:
    if p.last_ts > ts:
        return False
    return nonce is None or p.nonce < nonce or (p.nonce == nonce and p.crons_done == 0)


def point(b: BridgeService, pid: str, *, timestamp: int | None = None, message_id: str | None = None) -> Point:
    """A throwaway state of `pid` at the point (call holding the process's lock)."""
    w = b._warm_state(pid)
    if message_id is not None:
        meta = (0, w.info.origin_ts) if message_id == pid else w.remote.su.message_meta(pid, message_id)
        if meta is None:
            raise BridgeNotFound(f"Message {message_id} is not scheduled on process {pid}")
        nonce, ts = meta
        horizon = None
    else:
        assert timestamp is not None
        nonce, ts, horizon = None, timestamp, timestamp
    eng = engine()
    if _not_past(w.progress, nonce, ts):
        b.compute(pid, to_nonce=nonce, to_ts=ts)
        w = b._warm[pid]
        base = Point(eng.Instance.restore(w.module, w.instance.snapshot(), **w.limits), w.module, w.env, w.limits,
                     w.progress.copy())
    else:
        snap = b.store.snapshot(pid)
        base = None
        if snap is not None and _not_past(snap[0], nonce, ts):
            try:
                inst = eng.Instance.restore(w.module, eng.Snapshot.from_bytes(snap[1]), **w.limits)
                base = Point(inst, w.module, w.env, w.limits, snap[0])
            except eng.EngineError:
                base = None
        if base is None:
            base = Point(eng.Instance(w.module, **w.limits), w.module, w.env, w.limits, Progress())

    def seen(key: str, n: int) -> bool:
        first = b.store.dedup_nonce(pid, key)
        return first is not None and first < n

    for e in w.remote.stream(base.progress, seen=seen, to_nonce=nonce, to_ts=ts, horizon_ts=horizon):
        if e.kind != "duplicate":
            b.runner.handle(base, legacy.dumps(e.msg))
        base.progress = e.progress
    b.metrics["replays_at"] = b.metrics.get("replays_at", 0) + 1
    return base


def state(b: BridgeService, pid: str, *, timestamp: int | None = None,
          message_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    b._check(pid)
    with b._lock(pid):
        p = point(b, pid, timestamp=timestamp, message_id=message_id)
        return p.instance.memory(), {"Last-Timestamp": str(p.progress.last_ts),
                                     "Last-Ordinate": str(p.progress.nonce),
                                     "Last-Block-Height": str(p.progress.last_height)}


def dry_run(b: BridgeService, pid: str, body: Any, *, timestamp: int | None = None,
            message_id: str | None = None) -> bytes:
    b._check(pid)
    with b._lock(pid):
        p = point(b, pid, timestamp=timestamp, message_id=message_id)
    # the throwaway state is this request's own: evaluated outside the process's lock
    return dry_run_on(p, body, pid=pid, timestamp=p.progress.last_ts, block_height=p.progress.last_height,
                      timeout_s=b.config.dry_run_timeout_s)
