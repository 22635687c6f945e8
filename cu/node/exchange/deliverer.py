"""The deliverer: a thread of the evaluator process that delivers due `pending` outbox entries (docs/EXCHANGE.md).

It wakes when a result commits pending entries (`wake()`), when an attempt finishes, and on the timer of the
earliest `next_at`. Each due entry (the first pending one of its sender/target pair, so one process's messages
to another arrive in outbox order) goes to one of a few worker threads; an entry is never handed out twice
while in flight, and the evaluator's data-dir lock makes this the only deliverer of the store. Every attempt
ends in one store update and one JSON log line (logger `aocu.exchange`). A crash mid-push leaves the entry
`pending`: it is pushed again after the restart and the remote deduplicates it by message id."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from cu.node.bridge.gateway import GatewayClient
from cu.node.bridge.net import RetryPolicy
from cu.node.exchange import policy, push
from cu.node.exchange.locate import Location, Locator, NotLocated
from cu.node.store import LogEntry, OutboxEntry, StoreError
from cu.node.store_sqlite import SqliteStore

log = logging.getLogger("aocu.exchange")

WORKERS = 4
BATCH = 64
IDLE_S = 60.0

# schedules a pending entry on this node (its target is local now) and marks it delivered, atomically
ScheduleLocal = Callable[[OutboxEntry], LogEntry]


def _ms() -> int:
    return int(time.time() * 1000)


def locator_for(config: Any, store: SqliteStore, own_address: str) -> Locator:
    bridge = config.bridge
    gateway = None
    if bridge is not None:
        # one try per call: the deliverer has its own retry schedule
        gateway = GatewayClient(bridge.gateway_url, bridge.graphql_url, None,
                                RetryPolicy(attempts=1, deadline_s=10.0, timeout_s=10.0))
    return Locator(peers=list(config.peers), gateway=gateway, su_url=bridge.su_url if bridge else None,
                   own_address=own_address, is_local=lambda pid: store.process(pid) is not None)


class Deliverer:
    def __init__(self, store: SqliteStore, locator: Locator, schedule_local: ScheduleLocal, *,
                 retry_max_s: float = 300.0, metrics: dict[str, float] | None = None) -> None:
        self.store = store
        self.locator = locator
        self.schedule_local = schedule_local
        self.retry_max_s = retry_max_s
        self.metrics = metrics if metrics is not None else {}
        for k in ("outbox_deliveries_delivered", "outbox_deliveries_retry", "outbox_deliveries_failed"):
            self.metrics.setdefault(k, 0)
        self._cv = threading.Condition()
        self._woken = False
        self._stopping = False
        self._inflight: set[tuple[str, int, int]] = set()
        self._pairs: set[tuple[str, str]] = set()
        self._work: queue.Queue[OutboxEntry | None] = queue.Queue()
        self._threads: list[threading.Thread] = []

    # lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._threads = [threading.Thread(target=self._loop, name="aocu-outbox", daemon=True)]
        self._threads += [threading.Thread(target=self._worker, name=f"aocu-outbox-{i}", daemon=True)
                          for i in range(WORKERS)]
        for t in self._threads:
            t.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        for _ in range(WORKERS):
            self._work.put(None)
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))   # an in-flight push is retried after the restart

    def wake(self) -> None:
        with self._cv:
            self._woken = True
            self._cv.notify()

    # the loop -------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                if self._stopping:
                    return
                self._woken = False
            try:
                timeout = self._dispatch()
            except Exception as exc:  # noqa: BLE001 - the store is busy or broken: try again shortly
                log.error("outbox deliverer: %s", exc)
                timeout = 1.0
            with self._cv:
                if not self._woken and not self._stopping and timeout > 0:
                    self._cv.wait(timeout)

    def _dispatch(self) -> float:
        """Hands due entries to the workers; returns how long to sleep unless woken."""
        now = _ms()
        due = self.store.outbox_due(now, BATCH)
        handed = 0
        with self._cv:
            for e in due:
                if e.key in self._inflight or (e.pid, e.target) in self._pairs:
                    continue
                self._inflight.add(e.key)
                self._pairs.add((e.pid, e.target))
                self._work.put(e)
                handed += 1
        if handed and len(due) == BATCH:
            return 0.0
        nxt = self.store.outbox_next_due()
        if nxt is None:
            return IDLE_S
        if nxt > now:
            return min(IDLE_S, (nxt - now) / 1000)
        return 1.0          # due entries are in flight: their completion wakes the loop

    def _worker(self) -> None:
        while (e := self._work.get()) is not None:
            try:
                self._attempt(e)
            except Exception as exc:  # noqa: BLE001 - never lose the worker; the entry stays pending
                log.exception("outbox delivery of %s/%d/%d failed unexpectedly", *e.key)
                self._record(e, push.Outcome("retry", None, f"internal error: {exc}"), time.perf_counter())
            finally:
                with self._cv:
                    self._inflight.discard(e.key)
                    self._pairs.discard((e.pid, e.target))
                self.wake()

    # one attempt -------------------------------------------------------------------------------------------------
    def _attempt(self, e: OutboxEntry) -> None:
        t0 = time.perf_counter()
        meta = raw = None
        if e.kind != "Assignment":
            meta, raw = self.store.item_meta(e.item_id), self.store.item_raw(e.item_id)
            if meta is None or raw is None:
                self._record(e, push.Outcome("failed", None, f"item {e.item_id} is missing from the store"), t0)
                return
        try:
            if e.kind == "Spawn":
                assert meta is not None
                scheduler = next((v for n, v in meta.tags if n == "Scheduler"), "")
                loc = self.locator.scheduler(scheduler)
            else:
                loc = self.locator.process(e.target)
        except NotLocated as exc:
            self._not_found(e, exc.reason, exc.unsure, t0)
            return
        if loc.kind == "local":
            self._local(e, t0)
            return
        out = self._push(e, loc, meta, raw)
        if out.result == "elsewhere":
            self.locator.forget(e.target)
            self._not_found(e, out.reason or f"not scheduled at {loc.describe()}", False, t0)
            return
        self._record(e, out, t0)

    @staticmethod
    def _push(e: OutboxEntry, loc: Location, meta: Any, raw: bytes | None) -> push.Outcome:
        if e.kind == "Assignment":
            return push.assign(loc.url, loc.kind, e.target, e.item_id)
        assert meta is not None and raw is not None
        if loc.kind == "peer":
            return push.to_peer(loc.url, e.target, meta, raw)
        return push.to_su(loc.url, meta, raw)

    def _local(self, e: OutboxEntry, t0: float) -> None:
        try:
            entry = self.schedule_local(e)
        except StoreError as exc:
            self._record(e, push.Outcome("failed", "this node", str(exc)), t0)
            return
        self._count("delivered")
        self._log(e, "delivered", e.attempts + 1, f"local slot {entry.nonce}", None, None, t0)

    def _not_found(self, e: OutboxEntry, reason: str, unsure: bool, t0: float) -> None:
        if unsure:
            self._record(e, push.Outcome("retry", None, reason), t0)
            return
        probe = policy.probes_so_far(e.reason) + 1
        text = policy.not_found_reason(probe, reason)
        if probe >= policy.LOCATE_PROBES:
            self._record(e, push.Outcome("failed", None, text), t0)
        else:
            self._record(e, push.Outcome("retry", None, text), t0, delay_s=policy.reprobe_s(self.retry_max_s))

    def _record(self, e: OutboxEntry, out: push.Outcome, t0: float, delay_s: float | None = None) -> None:
        attempts, now = e.attempts + 1, _ms()
        if out.result == "delivered":
            self.store.outbox_update(e.key, state="delivered", attempts=attempts, next_at=0, remote=out.remote,
                                     reason=None, now_ms=now)
            outcome, next_at = "delivered", None
        elif out.result == "failed":
            self.store.outbox_update(e.key, state="failed", attempts=attempts, next_at=0, remote=out.remote,
                                     reason=out.reason, now_ms=now)
            outcome, next_at = "failed", None
        else:
            delay = policy.backoff_s(attempts, self.retry_max_s) if delay_s is None else delay_s
            next_at = now + int(delay * 1000)
            self.store.outbox_update(e.key, state="pending", attempts=attempts, next_at=next_at, remote=e.remote,
                                     reason=out.reason, now_ms=now)
            outcome = "retry"
        self._count(outcome)
        self._log(e, outcome, attempts, out.remote, out.reason, next_at, t0)

    def _count(self, outcome: str) -> None:
        with self._cv:
            self.metrics[f"outbox_deliveries_{outcome}"] += 1

    @staticmethod
    def _log(e: OutboxEntry, outcome: str, attempts: int, remote: str | None, reason: str | None,
             next_at: int | None, t0: float) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        line: dict[str, Any] = {"event": "outbox", "outcome": outcome, "process": e.pid, "seq": e.seq,
                                "index": e.idx, "type": e.kind, "target": e.target, "id": e.item_id,
                                "attempt": attempts, "ms": round((time.perf_counter() - t0) * 1000, 2)}
        if remote:
            line["remote"] = remote
        if reason:
            line["reason"] = reason
        if next_at is not None:
            line["next-attempt"] = next_at
        log.info(json.dumps(line, separators=(",", ":")))
