"""Evaluator (CU role): evaluates each process's log in slot order on the native engine, one warm instance per
active process, checkpoints every N evaluations and at shutdown, results stored per message, outbox
delivered to processes on this node as the legacy MU does, crons per docs/ABI.md (Cron generation).

One Evaluator object owns all processes of a data dir (the evaluator process holds an exclusive lock, see
service.py); a per-process lock serialises evaluation, so concurrent requests for the same result wait for
one evaluation and then read it. The parts it composes live next to this module (see the package docstring)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cu.node import cron, legacy, store_legacy
from cu.node.errors import CoreError, Gone, Internal, NotFound
from cu.node.eval.cacheauth import CacheAuth
from cu.node.eval.checkpoints import Checkpoints
from cu.node.eval.exports import StateExports, StateOut
from cu.node.eval.failed import FailedProcesses
from cu.node.eval.images import InitImages
from cu.node.eval.modules import ModuleCache
from cu.node.eval.outbox import OutboxSigner, over_limit
from cu.node.eval.patches import PatchCache
from cu.node.eval.recent import RecentMessages
from cu.node.eval.runner import Runner, dry_run_prepare, result_row, run_low_priority
from cu.node.eval.state import ProcState
from cu.node.eval.warm import ProcessLoader, WarmSet
from cu.node.items import Identity
from cu.node.store import ItemMeta, LogEntry, Outgoing, ResultRow

if TYPE_CHECKING:
    from cu.node.config import NodeConfig
    from cu.node.store_sqlite import SqliteStore

log = logging.getLogger("aocu.evaluator")

BATCH = 64          # results written per transaction while catching up
MAX_SETTLE = 10_000  # processes evaluated by one crank pass at most (the rest: a later turn)


class Evaluator:
    def __init__(self, config: NodeConfig, store: SqliteStore, identity: Identity) -> None:
        self.config = config
        self.store = store
        self.identity = identity
        self.cache_dir = Path(config.module_cache or Path(config.data_dir) / "module-cache")
        self.metrics: dict[str, float] = {"evaluations": 0, "eval_seconds": 0.0, "checkpoints": 0,
                                          "recompute_mismatch": 0, "outbox_delivered": 0, "dry_runs": 0,
                                          "restores": 0, "restore_failures": 0, "outbox_limited": 0,
                                          "crank_idle": 0}
        self.recent = RecentMessages()
        # compiled modules, checkpoints and patch caches are HMAC-authenticated (docs/SEALING.md)
        self.cache_auth = CacheAuth.for_node(config.tee, config.data_dir, self.metrics, cache_dir=self.cache_dir)
        self.patches = PatchCache(config.data_dir, auth=self.cache_auth)
        self.runner = Runner(self.metrics)
        self.outbox = OutboxSigner(identity, config.push_codec)
        fast = config.lifecycle == "fast"      # process lifecycle paths (cu/node/config.py)
        self.checkpoints = Checkpoints(store, self.patches, self.metrics, auth=self.cache_auth, incremental=fast)
        self.modules = ModuleCache(self.cache_dir, store.item_data, auth=self.cache_auth)
        # processes whose instance cannot be built (start function looping past --eval-timeout, ...)
        self.failed = FailedProcesses(config.data_dir)
        self.procs = WarmSet(config.max_warm, ProcessLoader(config, store, self.modules, self.checkpoints,
                                                            self.patches, self.failed,
                                                            InitImages(self.metrics) if fast else None).load,
                             self.checkpoint, config.max_memory, self.metrics, background=fast,
                             on_evicted=self.checkpoints.evicted)
        self._pending: dict[tuple[str, str], bytes] = {}   # results evaluated but not yet written
        # the block height now (core: the gateway's current block when the node follows it, cu/node/blocks.py)
        self.block_height: Callable[[], int] = lambda: config.block_height
        # the chain's blocks (min height, up to ts) for cron walks when the node follows a gateway, else None
        self.cron_blocks: Callable[[int, int], list[Any] | None] = lambda min_height, max_ts: None
        self.exports = StateExports(config.data_dir, inline_max=config.state_chunk, chunk=config.state_chunk)
        # pids that received outbox deliveries (a process sending to itself included) are handed here: the
        # crank queue (EvaluatorCore.notify) rather than evaluated while a caller holds another process's lock.
        # Without a crank they are evaluated when read.
        self.on_delivery: Callable[[str], None] = lambda pid: None
        # called after results committed outbox entries for targets elsewhere (wakes the deliverer)
        self.on_outbox: Callable[[], None] = lambda: None
        # the processes this evaluator evaluates (cu/node/shards.py); deliveries to others go to on_delivery
        self.owns: Callable[[str], bool] = lambda pid: True

    def remember(self, entry: LogEntry, item: tuple[ItemMeta, bytes]) -> None:
        """A message was durably scheduled (the store has it; this is only a shortcut)."""
        self.recent.remember(entry, item)

    # the evaluation loop ----------------------------------------------------------------------------
    def _message_json(self, st: ProcState, entry: LogEntry,
                      item: tuple[ItemMeta, bytes] | None = None) -> tuple[bytes, ItemMeta]:
        got = item or self.store.item_with_data(entry.message_id)
        if got is None:
            raise Internal(f"message {entry.message_id} of {st.pid} missing from the store")
        meta, data = got
        # a pure assignment (item not addressed to this process) keeps its own recipient as Target
        pure = entry.nonce != 0 and meta.target != st.pid
        target = meta.target if pure else st.pid
        msg = legacy.scheduled_message(
            msg_id=meta.id, signature=meta.signature, data=data, owner=meta.owner, target=target,
            anchor=meta.anchor, tags=meta.tags, epoch=entry.epoch, nonce=entry.nonce, timestamp=entry.timestamp,
            block_height=entry.block_height, hash_chain=entry.hash_chain)
        if pure:
            # as the legacy CU hydrates an assignment: no Forwarded-By, and no Data when it is excluded
            msg.pop("Forwarded-By", None)
            assignment = self.store.item_meta(entry.assignment_id)
            if assignment is not None and ("Exclude", "Data") in assignment.tags:
                msg.pop("Data", None)
        return legacy.dumps(msg), meta

    def _flush(self, st: ProcState, rows: list[ResultRow], outgoing: dict[int, list[Outgoing]]) -> list[str]:
        if not rows:
            return []
        # recomputation after a restart must agree with what was stored
        if rows[0].seq <= st.stored_seq:
            for r in rows:
                old = self.store.result_by_seq(st.pid, r.seq)
                if old is not None and old.body != r.body:
                    self.metrics["recompute_mismatch"] += 1
                    log.error("recomputed result of %s seq %d differs from the stored one", st.pid, r.seq)
        if not outgoing and all(r.message_id is not None for r in rows):
            # write-behind: readers get these from memory until they are stored; a crash before that only
            # means recomputing them from the log
            batch = list(rows)
            keys = [(r.pid, r.message_id) for r in batch if r.message_id is not None]
            for r in batch:
                if r.message_id is not None:
                    self._pending[(r.pid, r.message_id)] = r.body

            def stored(_: object, keys: list[tuple[str, str]] = keys) -> None:
                for k in keys:
                    self._pending.pop(k, None)

            self.store.put_results_async(batch, stored)
            rows.clear()
            return []
        pending = self.store.pending_written
        new = self.store.put_results(rows, outgoing, int(time.time() * 1000), self.block_height(),
                                     self.identity.build_assignment)
        if self.store.pending_written != pending:
            self.on_outbox()
        self.metrics["outbox_delivered"] += len(new)
        rows.clear()
        outgoing.clear()
        return sorted({e.pid for e in new})

    def _evaluate_one(self, st: ProcState, msg: bytes, *, nonce: int, cron_id: str | None,
                      message_id: str | None, timestamp: int, height: int, source: ItemMeta | None,
                      rows: list[ResultRow], outgoing: dict[int, list[Outgoing]]) -> None:
        raw = self.runner.handle(st, msg, keep_patches=True)
        st.mem_bytes = st.instance.memory_size
        self.patches.apply(st.pid, raw)     # before the legacy merge drops `Patches`
        result = legacy.merge_result(raw)
        limited = over_limit(result, self.config.max_outbox)
        if limited is not None:
            # an Error instead of seconds of RSA signing; the memory keeps the evaluation's effects (undoing
            # them would need a snapshot before every message)
            log.warning("%s: %s", st.pid, limited["Error"])
            self.metrics["outbox_limited"] += 1
            result = limited
        st.seq += 1
        rows.append(result_row(st.pid, st.seq, nonce, cron_id, message_id, timestamp, height, result))
        outs = self.outbox.outgoing(st.pid, st.module_id, result, source)
        if outs:
            outgoing[st.seq] = outs
        st.since_checkpoint += 1

    def _crons(self, st: ProcState, right_ts: int, rows: list[ResultRow],
               outgoing: dict[int, list[Outgoing]]) -> None:
        if not st.crons or st.nonce < 0:
            return
        fires = cron.fires(st.crons, process_ts=st.process_ts, process_height=st.process_height,
                           left_ts=st.last_ts, left_height=st.last_height, right_ts=right_ts,
                           height=self.block_height(), after_tick=st.cron_ts,
                           blocks=self.cron_blocks(st.last_height, right_ts))
        for f in fires:
            msg = legacy.dumps(legacy.cron_message(owner=st.owner, target=st.pid, tags=f.cron.tags,
                                                   timestamp=f.timestamp, block_height=f.block_height))
            self._evaluate_one(st, msg, nonce=st.nonce, cron_id=f.cron.id, message_id=None,
                               timestamp=f.timestamp, height=f.block_height, source=None, rows=rows,
                               outgoing=outgoing)
            st.cron_ts = f.tick       # the walk's step (a block cron's timestamp is its block's)

    def catch_up(self, pid: str, to_nonce: int | None = None, cron_horizon: int | None = None) -> list[str]:
        """Evaluates the log of `pid` up to `to_nonce` (default: everything scheduled), and crons up to
        `cron_horizon` (exclusive) after the last message. Returns pids that received outbox deliveries, `pid`
        itself included when it sent to itself: those messages were scheduled after `target` was fixed, so they
        are left to a later turn of the crank (handing them back is what gets them evaluated unread)."""
        with self.procs.lock(pid):
            st = self.procs.state(pid)
            if to_nonce is not None and self.recent.chunk(pid, to_nonce, to_nonce) is not None:
                target = to_nonce          # a committed entry: the log reaches at least this far
            else:
                proc = self.store.process(pid)
                last = proc.nonce if proc else -1
                target = last if to_nonce is None else min(to_nonce, last)
            rows: list[ResultRow] = []
            outgoing: dict[int, list[Outgoing]] = {}
            touched: set[str] = set()
            try:
                while target > st.nonce:
                    upto = min(target, st.nonce + 1000)
                    chunk = self.recent.chunk(pid, st.nonce + 1, upto) or [
                        (e, None) for e in self.store.log_range(pid, st.nonce + 1, upto)]
                    if not chunk:
                        raise Internal(f"log of {pid} has a gap after nonce {st.nonce}")
                    # small backlogs flush per message, so waiting readers see their result at once
                    batch = 1 if target - st.nonce <= 16 else BATCH
                    for entry, item in chunk:
                        self._crons(st, entry.timestamp, rows, outgoing)
                        msg, source = self._message_json(st, entry, item)
                        self.recent.forget(entry)
                        self._evaluate_one(st, msg, nonce=entry.nonce, cron_id=None, message_id=entry.message_id,
                                           timestamp=entry.timestamp, height=entry.block_height, source=source,
                                           rows=rows, outgoing=outgoing)
                        st.nonce, st.cron_ts = entry.nonce, None
                        st.last_ts, st.last_height = entry.timestamp, entry.block_height
                        if len(rows) >= batch:
                            touched.update(self._flush(st, rows, outgoing))
                if cron_horizon is not None and (to_nonce is None or target >= last):
                    self._crons(st, cron_horizon, rows, outgoing)
                touched.update(self._flush(st, rows, outgoing))
            except BaseException:
                # the warm state no longer matches the store: drop it and rebuild from a checkpoint
                self.procs.drop(pid)
                raise
            if st.since_checkpoint >= self.config.checkpoint_every:
                self.checkpoint(pid)
        self.procs.trim()
        return sorted(touched)

    def has_work(self, pid: str, upto: int | None = None) -> bool:
        """Whether the crank has something to evaluate for `pid`, decided without restoring it. `upto`: the newest
        nonce the turn was asked for, when every notification of it named a scheduled message; None when it must
        look at everything scheduled. A warm process has work unless it is already past `upto` (a reader evaluated
        those messages and handed on their outbox); without `upto` it is simply caught up (that costs nothing when
        it has nothing to do). An evicted one has work only when the store has a message past its last stored
        result (an outbox delivery to it is such a message). Crons are not the crank's: they fire before each later
        message and when the process is read or monitored. A result still waiting to be written behind counts as
        missing, so the doubt costs at most a needless restore."""
        st = self.procs.get(pid)
        if st is not None:
            return upto is None or st.nonce < upto
        last = self.store.last_result_nonce(pid)
        if upto is None:
            proc = self.store.process(pid)
            if proc is None:
                return True                 # catch_up names what is wrong
            upto = proc.nonce
        if last is None or last < upto:         # (a given `upto` is scheduled: the log reaches it)
            return True
        self.metrics["crank_idle"] += 1         # nothing to do: not restored
        return False

    def quick(self, pid: str) -> bool:
        """Whether reading `pid`'s results is cheap now: it is warm and nobody is evaluating it (its lock is free),
        so at most its newest messages are evaluated, on the warm instance."""
        if self.procs.get(pid) is None:
            return False
        lock = self.procs.lock(pid)
        if not lock.acquire(blocking=False):
            return False
        lock.release()
        return True

    def settle(self, pids: list[str]) -> None:
        """Evaluates processes that received outbox messages, transitively (the MU's crank). Bounded: one pass
        evaluates each process at most once (and at most MAX_SETTLE processes); a process that receives
        messages after its turn in this pass (from itself, or back from a process it wrote to) is handed to
        `on_delivery`, i.e. to a later crank turn, so a process that sends to itself on every message is
        evaluated one delivery round per turn and never holds the crank in one pass."""
        pending = list(pids)
        done: set[str] = set()
        later: list[str] = []
        while pending and len(done) < MAX_SETTLE:
            pid = pending.pop(0)
            done.add(pid)
            try:
                if not self.has_work(pid):
                    continue
                got = self.catch_up(pid)
            except CoreError as exc:
                log.warning("crank of %s failed: %s", pid, exc.message)
                continue
            except Exception as exc:  # noqa: BLE001 - one process failing must not stop the others' crank
                log.error("crank of %s failed: %s", pid, exc)
                continue
            for p in got:
                if not self.owns(p):
                    self.on_delivery(p)       # another evaluator shard's process: its owner evaluates it
                elif p in done:
                    if p not in later:
                        later.append(p)
                elif p not in pending:
                    pending.append(p)
        for p in later + [p for p in pending if p not in later]:
            self.on_delivery(p)

    # reads ----------------------------------------------------------------------------------------
    def result(self, pid: str, message_id: str) -> bytes:
        body = self._pending.get((pid, message_id))
        if body is not None:
            return body
        recent = self.recent.entry(pid, message_id)
        row = None if recent is not None else self.store.result_by_message(pid, message_id)
        if row is None:
            entry = recent if recent is not None else self.store.log_entry_by_message(pid, message_id)
            if entry is None:
                # the legacy CU also reads a result by its assignment's id
                entry = store_legacy.log_entry_by_assignment(self.store, pid, message_id)
                if entry is not None:
                    return self.result(pid, entry.message_id)
            if entry is None:
                if self.store.process(pid) is None:
                    raise NotFound(f"Process {pid} not found")
                raise NotFound(f"Message {message_id} is not scheduled on process {pid}")
            if recent is None and entry.nonce <= self.store.pruned_nonce(pid):
                raise Gone(f"the result of message {message_id} on process {pid} was removed by this node's "
                           f"retention policy (--retain-results {self.config.retain_results}); the message log "
                           "is kept")
            for p in self.catch_up(pid, entry.nonce):
                self.on_delivery(p)
            body = self._pending.get((pid, message_id))
            if body is not None:
                return body
            row = self.store.result_by_message(pid, message_id)
            if row is None:
                raise Internal(f"evaluation of {message_id} produced no result")
        return row.body

    def up_to_now(self, pid: str) -> ProcState:
        if self.store.process(pid) is None:
            raise NotFound(f"Process {pid} not found")
        horizon = self.store.advance_time(pid, int(time.time() * 1000))
        for p in self.catch_up(pid, None, horizon):
            self.on_delivery(p)
        return self.procs[pid]

    def dry_run(self, pid: str, body: Any) -> bytes:
        with self.procs.lock(pid):
            st = self.up_to_now(pid)
            run = dry_run_prepare(st, body, pid=pid, timestamp=st.last_ts, block_height=st.last_height,
                                  timeout_s=self.config.dry_run_timeout_s)
        out = run_low_priority(run)   # on its own copy of the instance: the process's messages go on meanwhile
        self.metrics["dry_runs"] += 1
        return out

    def state(self, pid: str) -> StateOut:
        """The process's memory after its newest message: inline when small, else spooled for a chunked
        download (cu/node/eval/exports.py), copied from the zero-copy memory view while the lock is held."""
        with self.procs.lock(pid):
            st = self.up_to_now(pid)
            return self.exports.offer(st.instance.memory_view(), {
                "Last-Timestamp": str(st.last_ts), "Last-Ordinate": str(st.nonce),
                "Last-Block-Height": str(st.last_height)})

    def now(self, pid: str) -> dict[str, Any]:
        """Evaluates `pid` up to its newest slot (and due crons), then its slot and patch@1.0 cache (None when
        it cannot be known: restored from a checkpoint written without it)."""
        with self.procs.lock(pid):
            st = self.up_to_now(pid)
            return {"slot": st.nonce, "timestamp": st.last_ts, "block_height": st.last_height,
                    "cache": self.patches.get(pid)}

    # checkpoints --------------------------------------------------------------------------------------
    def checkpoint(self, pid: str) -> None:
        with self.procs.lock(pid):
            st = self.procs.get(pid)
            if st is None or st.seq < 0:
                return
            self.checkpoints.write(st)

    def shutdown(self) -> None:
        self.procs.drain()        # evicted processes being checkpointed in the background first
        for pid, st in self.procs.items():
            if st.since_checkpoint:
                try:
                    self.checkpoint(pid)
                except Exception as exc:  # noqa: BLE001 - keep checkpointing the others
                    log.error("checkpoint of %s at shutdown failed: %s", pid, exc)

    def warm(self) -> int:
        return len(self.procs)
