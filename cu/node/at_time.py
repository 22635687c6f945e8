"""Reads of a local process at a point in its history (legacy `GET /state/{pid}?to=`, `POST /dry-run?to=`).

The point is a timestamp (every message scheduled at or before it, and the crons due before it) or a scheduled
message (up to and including it). As the legacy CU does, the state there is the nearest known state at or before
the point, replayed forward: the warm state when it has not passed the point (it is first evaluated up to the
point's last message for good, which is ordinary progress), else the newest checkpoint at or before the point,
else the start. What is replayed past a stored state is evaluated on a throwaway instance and nothing of it is
kept."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import zstandard

from cu.node import cron, legacy, store_legacy
from cu.node.errors import NotFound
from cu.node.eval.checkpoints import unseal
from cu.node.eval.modules import engine
from cu.node.eval.runner import dry_run_on
from cu.node.eval.state import ProcState
from cu.node.rpc import At
from cu.node.store import LogEntry

if TYPE_CHECKING:
    from cu.node.eval.loop import Evaluator


def target(ev: Evaluator, pid: str, at: At) -> tuple[LogEntry, int | None]:
    """(the last scheduled entry the point includes, the cron horizon: crons before it are included; None when
    the point is a message)."""
    store = ev.store
    if store.process(pid) is None:
        raise NotFound(f"Process {pid} not found")
    if at.message_id is not None:
        e = store.log_entry_by_message(pid, at.message_id) or \
            store_legacy.log_entry_by_assignment(store, pid, at.message_id)
        if e is None:
            raise NotFound(f"Message {at.message_id} is not scheduled on process {pid}")
        return e, None
    assert at.timestamp is not None
    e = store_legacy.last_log_entry_at(store, pid, at.timestamp)
    if e is None:
        raise NotFound(f"Process {pid} has no message at or before timestamp {at.timestamp} (it was spawned later)")
    return e, at.timestamp


def _cron_ok(cron_ts: int | None, horizon: int | None) -> bool:
    """Whether crons evaluated after a position (up to `cron_ts`) are all inside the point."""
    return cron_ts is None or (horizon is not None and cron_ts < horizon)


def _base(ev: Evaluator, st: ProcState, entry: LogEntry, horizon: int | None) -> ProcState:
    """A throwaway copy of the newest known state at or before the point."""
    eng = engine()
    if st.nonce == entry.nonce and _cron_ok(st.cron_ts, horizon):
        inst = eng.Instance.restore(st.module, st.instance.snapshot(), **st.limits)
        return dataclasses.replace(st, instance=inst)
    for cp in store_legacy.checkpoints_of(ev.store, st.pid):
        if cp.nonce > entry.nonce or (cp.nonce == entry.nonce and not _cron_ok(cp.cron_ts, horizon)):
            continue
        body, _ = unseal(ev.checkpoints.auth, cp)     # only an authenticated checkpoint is ever restored
        if body is None:
            continue
        try:
            snap = eng.Snapshot.from_bytes(zstandard.ZstdDecompressor().decompress(body))
            inst = eng.Instance.restore(st.module, snap, verify=True, **st.limits)
        except (eng.EngineError, zstandard.ZstdError):
            continue      # an unusable checkpoint: an older one, or the start
        last = ev.store.log_entry(st.pid, cp.nonce)
        return dataclasses.replace(st, instance=inst, seq=cp.seq, nonce=cp.nonce, cron_ts=cp.cron_ts,
                                   last_ts=cp.timestamp,
                                   last_height=last.block_height if last else st.process_height)
    return dataclasses.replace(st, instance=eng.Instance(st.module, **st.limits), seq=-1, nonce=-1, cron_ts=None,
                               last_ts=0, last_height=st.process_height)


def _crons(ev: Evaluator, p: ProcState, right_ts: int) -> None:
    if not p.crons or p.nonce < 0:
        return
    for f in cron.fires(p.crons, process_ts=p.process_ts, process_height=p.process_height, left_ts=p.last_ts,
                        left_height=p.last_height, right_ts=right_ts, height=ev.block_height(),
                        after_tick=p.cron_ts, blocks=ev.cron_blocks(p.last_height, right_ts)):
        msg = legacy.cron_message(owner=p.owner, target=p.pid, tags=f.cron.tags, timestamp=f.timestamp,
                                  block_height=f.block_height)
        ev.runner.handle(p, legacy.dumps(msg))
        p.cron_ts = f.tick


def point(ev: Evaluator, pid: str, at: At) -> ProcState:
    """A throwaway state of `pid` at `at` (call holding the process's lock)."""
    entry, horizon = target(ev, pid, at)
    for p in ev.catch_up(pid, entry.nonce):
        ev.on_delivery(p)
    p = _base(ev, ev.procs.state(pid), entry, horizon)
    while p.nonce < entry.nonce:
        for e in ev.store.log_range(pid, p.nonce + 1, min(entry.nonce, p.nonce + 1000)):
            _crons(ev, p, e.timestamp)
            msg, _ = ev._message_json(p, e)
            ev.runner.handle(p, msg)
            p.nonce, p.cron_ts, p.last_ts, p.last_height = e.nonce, None, e.timestamp, e.block_height
    if horizon is not None:
        _crons(ev, p, horizon)
    ev.metrics["replays_at"] = ev.metrics.get("replays_at", 0) + 1
    return p


def state(ev: Evaluator, pid: str, at: At) -> tuple[bytes, dict[str, str]]:
    with ev.procs.lock(pid):
        p = point(ev, pid, at)
        last_ts = max(p.last_ts, p.cron_ts or 0)
        return p.instance.memory(), {"Last-Timestamp": str(last_ts), "Last-Ordinate": str(p.nonce),
                                     "Last-Block-Height": str(p.last_height)}


def dry_run(ev: Evaluator, pid: str, body: Any, at: At) -> bytes:
    with ev.procs.lock(pid):
        p = point(ev, pid, at)
    # the throwaway state is this request's own: evaluated outside the process's lock
    out = dry_run_on(p, body, pid=pid, timestamp=max(p.last_ts, p.cron_ts or 0), block_height=p.last_height,
                     timeout_s=ev.config.dry_run_timeout_s)
    ev.metrics["dry_runs"] += 1
    return out
