"""The evaluator core: the one place a data dir's messages are scheduled and evaluated. It owns the store's
group commit (one fsync for every write queued meanwhile) and the crank thread, which evaluates newly scheduled
messages nobody reads and delivers their outbox, like the legacy MU cranking results after it forwards a
message. Requests reach it through `cu.node.dispatch.Dispatcher`."""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from cu.node import blocks
from cu.node.cluster import cluster_for, open_store
from cu.node.config import NodeConfig
from cu.node.errors import NotFound, Unavailable
from cu.node.evaluator import Evaluator
from cu.node.exchange.deliverer import Deliverer, locator_for
from cu.node.items import Identity
from cu.node.retention import Pruner
from cu.node.shards import Ownership, Peers, WriteGate
from cu.node.store import LogEntry, OutboxEntry, ScheduleOp, StoreError
from cu.node.store_sqlite import Job, SqliteStore

log = logging.getLogger("aocu.evaluator")

MAX_GROUP = 256          # ops per group commit
# Write-behind results (served from memory until stored) ride along with the next scheduling commit, or are
# committed by the crank thread this long after they were queued, whichever comes first.
WRITE_BEHIND_S = 0.005
TICK_S = WRITE_BEHIND_S   # the crank's own look-again interval while notifications keep coming
ACTIVE_S = 1.0           # ... that is, within this long of the latest
QUICK_COMMIT_S = 0.002   # commits faster than this on average: scheduling is answered inline


class EvaluatorCore:
    """Evaluator + crank queue. All evaluation of a data dir happens in exactly one EvaluatorCore."""

    def __init__(self, config: NodeConfig, store: SqliteStore | None = None, identity: Identity | None = None,
                 ) -> None:
        self.config = config
        self.store = store or open_store(config)     # SQLite, or PostgreSQL shared by nodes (--store)
        self.identity = identity or Identity.load(config.data_dir, config.wallet)
        self.evaluator = Evaluator(config, self.store, self.identity)
        self.evaluator.block_height = lambda: blocks.height(config)
        self.evaluator.cron_blocks = lambda min_height, max_ts: blocks.chain(config, min_height, max_ts)
        self.evaluator.on_delivery = self.notify
        # evaluator shards (cu/node/shards.py): this one evaluates only the processes it owns; the others are
        # told about deliveries to theirs, and node-wide background work runs in shard 0 alone
        self.owns = Ownership(config.evaluators, config.shard)
        self.evaluator.owns = self.owns
        self.peers = Peers(config.socket_path, config.evaluators, config.shard) if config.evaluators > 1 else None
        # shards' commits on one SQLite file queue on a flock (a server store orders its own transactions)
        self._gate = WriteGate(config.data_dir) if config.evaluators > 1 and isinstance(self.store, SqliteStore) \
            else contextlib.nullcontext()
        self._due: dict[str, float] = {}         # pid -> monotonic time its crank is due
        # pid -> the newest nonce its due crank was asked for, when every notification named one: a crank turn
        # finds the warm process already past it (a reader evaluated it meanwhile) and skips the store lookups
        self._upto: dict[str, int] = {}
        # when the waiting crank thread looks again by itself (0: it is not waiting): notify() wakes it only
        # for something due earlier, so each scheduled message does not cost the crank a needless wake-up
        self._wake_at = 0.0
        self._notified_at = float("-inf")         # the latest notification (the crank ticks while they come)
        self._flush_at: float | None = None       # when queued write-behind results must be committed
        self._crank_cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._commit_q: queue.Queue[tuple[Job, bool, Future]] = queue.Queue()
        self._commit_lock = threading.Lock()
        self._commit_s = 0.0                      # recent commits' duration (moving average)
        self._deferred = threading.local()
        self.store.writer = self._group_write
        self.store.async_writer = self._group_write_deferred
        # outbox entries for targets elsewhere (cu/node/exchange): located and pushed by the deliverer
        self.deliverer = Deliverer(self.store, locator_for(config, self.store, self.identity.address),
                                   self._deliver_local, retry_max_s=config.outbox_retry_max_s,
                                   metrics=self.evaluator.metrics)
        self.evaluator.on_outbox = self.deliverer.wake if self.owns.leader or self.peers is None \
            else self.peers.wake_deliverer
        # retention (--retain-results / --retain-checkpoints): a bounded background pass (cu/node/retention.py)
        self.store.keep_checkpoints = config.retain_checkpoints
        self.pruner = Pruner(self.store, retain_results=config.retain_results,
                             retain_checkpoints=config.retain_checkpoints, every_s=config.prune_every_s,
                             metrics=self.evaluator.metrics)
        # nodes sharing a PostgreSQL store (cu/node/cluster.py): the crank evaluates only processes this node
        # leases; the leader shard keeps the node's heartbeat and takes over dead nodes' processes
        self.cluster = cluster_for(config, self.store, self.identity.address,
                                   lambda pid: self.notify(pid, self.config.crank_delay_s), evaluator=True)

    def start(self) -> None:
        if self.cluster is not None and self.owns.leader:
            self.cluster.start()
        self._thread = threading.Thread(target=self._crank, name="aocu-crank", daemon=True)
        self._thread.start()
        if self.peers is not None:
            self.peers.start()
        if self.owns.leader:
            self.deliverer.start()
            self.pruner.start()
        # messages acknowledged before a stop may not have been evaluated yet (or delivered by another shard
        # while this one was down)
        for pid in filter(self.owns, self.store.all_processes()):
            proc = self.store.process(pid)
            last = self.store.last_result(pid)
            if proc is not None and (last is None or last.nonce < proc.nonce):
                self.notify(pid)

    # group commit, leader-based: the first writer to find the store idle commits everything queued so far
    # in one transaction (one fsync) on its own thread; writers arriving meanwhile queue and are committed by
    # it or by the next leader. No writer thread, so no extra thread hand-offs on the acknowledgement path.
    def _group_write(self, jobs: list[Job], durable: bool) -> list[Any]:
        if self._commit_q.qsize() + len(jobs) <= MAX_GROUP and self._commit_lock.acquire(blocking=False):
            # the store is idle: lead at once, this writer's own jobs last (queue order) and without futures
            try:
                batch: list[tuple[Job, bool, Future | None]] = self._take(MAX_GROUP - len(jobs))
                own = self._commit(batch + [(job, durable, None) for job in jobs])[len(batch):]
            finally:
                self._commit_lock.release()
            if not self._commit_q.empty():
                self._lead()            # writers that queued while this one led
            return own
        futs: list[Future] = []
        for job in jobs:
            fut: Future = Future()
            self._commit_q.put((job, durable, fut))
            futs.append(fut)
        self._lead()
        out: list[Any] = []
        for fut in futs:
            try:
                out.append(fut.result(timeout=120))
            except Exception as exc:  # noqa: BLE001 - returned in place, as transact() does
                out.append(exc)
        return out

    def commits_quick(self) -> bool:
        """Whether a commit is quick lately (no slow fsync): then scheduling may wait for its own commit on the RPC
        server's reading thread. On a slow disk writers are answered from the pool, where their commits group."""
        return self._commit_s < QUICK_COMMIT_S

    def _lead(self) -> None:
        while True:
            if not self._commit_lock.acquire(blocking=False):
                return              # the current leader re-checks the queue after it finishes
            try:
                batch = self._take(MAX_GROUP)
                if batch:
                    self._commit(batch)
            finally:
                self._commit_lock.release()
            if self._commit_q.empty():
                return

    def _take(self, limit: int) -> list[tuple[Job, bool, Future | None]]:
        """Up to `limit` queued writes, oldest first (the caller holds the commit lock)."""
        batch: list[tuple[Job, bool, Future | None]] = []
        while len(batch) < limit:
            try:
                batch.append(self._commit_q.get_nowait())
            except queue.Empty:
                break
        return batch

    def _commit(self, batch: list[tuple[Job, bool, Future | None]]) -> list[Any]:
        """Commits `batch` in one transaction; each job's result (or exception) goes to its future, and all of
        them are returned in order (for the jobs of a leading writer, which have no future)."""
        t0 = time.perf_counter()
        try:
            with self._gate:        # the store is shared by the node's evaluator shards
                results = self.store.transact([job for job, _, _ in batch], any(d for _, d, _ in batch))
        except Exception as exc:  # noqa: BLE001 - the whole transaction failed: nothing acknowledged
            log.error("group commit of %d writes failed: %s", len(batch), exc)
            failed = [Unavailable(f"could not write to the store: {exc}") for _ in batch]
            for (_, _, fut), err in zip(batch, failed, strict=True):
                if fut is not None:
                    fut.set_exception(err)
            return failed
        took = time.perf_counter() - t0
        self._commit_s += (took - self._commit_s) * 0.25
        m = self.evaluator.metrics
        m["commits"] = m.get("commits", 0) + 1
        m["commit_writes"] = m.get("commit_writes", 0) + len(batch)
        m["commit_seconds"] = m.get("commit_seconds", 0.0) + took
        for (_, _, fut), res in zip(batch, results, strict=True):
            if fut is None:
                continue
            if isinstance(res, Exception):
                fut.set_exception(res)
            else:
                fut.set_result(res)
        return results

    def _group_write_deferred(self, job: Job, durable: bool, done: Callable[[Any], None]) -> None:
        """Write-behind: queued now; committed with the next scheduling commit or by the crank thread within
        WRITE_BEHIND_S (at once when many are queued), never on the thread answering a request."""
        fut: Future = Future()
        fut.add_done_callback(lambda f: done(f.exception() or f.result()))
        self._commit_q.put((job, durable, fut))
        due = time.monotonic() + (WRITE_BEHIND_S if self._commit_q.qsize() < MAX_GROUP // 4 else 0.0)
        with self._crank_cv:
            if self._flush_at is None or due < self._flush_at:
                self._flush_at = due
                if due < self._wake_at:
                    self._crank_cv.notify()

    def schedule(self, op: ScheduleOp, *, defer_notify: bool = False) -> tuple[LogEntry, bool]:
        build = self.identity.build_assignment
        if op.exclude:      # a legacy `exclude=` assignment: its Exclude tags
            build = functools.partial(build, exclude=tuple(op.exclude.split(",")))
        (res,) = self.store.schedule_batch([op], int(time.time() * 1000), blocks.height(self.config), build)
        if isinstance(res, Exception):
            raise NotFound(str(res)) if isinstance(res, StoreError) else res
        if res[1]:
            if op.kind == "message" and op.item is not None:
                self.evaluator.remember(res[0], op.item)
            if defer_notify:
                # cranked after the acknowledgement is sent: evaluation must not hold the GIL before it
                self._deferred.__dict__.setdefault("pids", []).append((res[0].pid, res[0].nonce))
            else:
                self.notify(res[0].pid, self.config.crank_delay_s, res[0].nonce)
        return res

    def _deliver_local(self, entry: OutboxEntry) -> LogEntry:
        """A pending outbox entry whose target is on this node now: scheduled here (and marked delivered)."""
        log_entry, fresh = self.store.outbox_schedule_local(entry, int(time.time() * 1000),
                                                            blocks.height(self.config), self.identity.build_assignment)
        if fresh:
            self.notify(log_entry.pid, self.config.crank_delay_s, log_entry.nonce)
        return log_entry

    def flush_deferred(self) -> None:
        """After a request's reply is sent: its crank notifications."""
        for pid, nonce in self._deferred.__dict__.pop("pids", []):
            self.notify(pid, self.config.crank_delay_s, nonce)

    def notify(self, pid: str, delay_s: float = 0.0, upto: int | None = None) -> None:
        """Evaluate `pid`'s unevaluated messages (and deliver their outbox) `delay_s` from now at the latest;
        `upto`: the nonce of the message this is about, when it is one scheduled message."""
        if not self.config.eager:
            return
        if self.peers is not None and not self.owns(pid):
            self.peers.notify(pid)      # another shard's process: its owner cranks it
            return
        now = time.monotonic()
        due = now + delay_s
        with self._crank_cv:
            self._notified_at = now
            cur = self._due.get(pid)
            if upto is None or (cur is not None and pid not in self._upto):
                self._upto.pop(pid, None)       # not only named messages: the turn must look at the store
            else:
                self._upto[pid] = max(upto, self._upto.get(pid, upto))
            if cur is not None and cur <= due:
                return
            self._due[pid] = due
            if due < self._wake_at:
                self._crank_cv.notify()

    def _next_due(self) -> tuple[list[str], bool] | None:
        """(processes whose crank is due, whether queued write-behind results are due), or None to stop."""
        with self._crank_cv:
            while not self._stopping.is_set():
                now = time.monotonic()
                ready = [pid for pid, due in self._due.items() if due <= now]
                flush = self._flush_at is not None and self._flush_at <= now
                if ready or flush:
                    for pid in ready:
                        del self._due[pid]
                    if flush:
                        self._flush_at = None
                    return ready, flush
                times = list(self._due.values()) + ([self._flush_at] if self._flush_at is not None else [])
                if now - self._notified_at < ACTIVE_S:
                    # busy: look again every tick by itself, so notifications due later (crank turns, write-behind
                    # commits) need not wake it, each a GIL hand-off in the middle of someone's request
                    times.append(now + TICK_S)
                self._wake_at = min(times) if times else float("inf")
                self._crank_cv.wait(self._wake_at - now if times else None)
                self._wake_at = 0.0
        return None

    def _crank(self) -> None:
        while (work := self._next_due()) is not None:
            ready, flush = work
            if flush:
                self._lead()
            for pid in ready:
                try:
                    if self.cluster is not None and not self.cluster.mine(pid):
                        continue        # leased by another node: its crank evaluates it
                    if not self.evaluator.has_work(pid, self._turn_upto(pid)):
                        continue        # e.g. a reader evaluated every message this turn was for
                    self.evaluator.settle([pid])
                except Exception as exc:  # noqa: BLE001 - the crank must survive any one process failing
                    log.error("evaluation of %s failed: %s", pid, exc)

    def _turn_upto(self, pid: str) -> int | None:
        """The newest nonce `pid`'s due turn is for, when every notification of it named a scheduled message
        (Evaluator.has_work skips the turn if the process is past it); None when the turn must look at the store,
        or when `pid` was notified again meanwhile (that turn decides)."""
        with self._crank_cv:
            return None if pid in self._due else self._upto.pop(pid, None)

    def queued(self) -> int:
        """Processes waiting for the crank."""
        with self._crank_cv:
            return len(self._due)

    def stop(self) -> None:
        self.pruner.stop()
        self.deliverer.stop()
        self._stopping.set()
        with self._crank_cv:
            self._crank_cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.evaluator.shutdown()           # checkpoints (and any queued write-behind results) are written
        self._lead()
        if self.cluster is not None and self.owns.leader:
            self.cluster.leave()            # after the checkpoints: the other nodes take over at once
        if self.peers is not None:
            self.peers.stop()
