"""The evaluator process's dispatcher: answers each typed request (`cu.node.rpc`) from the evaluator core, or
from the legacynet bridge when the request names a process that is not scheduled on this node and `aocu serve
--gateway` configured one. Callers never say which: local vs bridged is decided here, once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from cu.node import at_time, rpc, status  # status: imported at start, its clock is the evaluator's uptime
from cu.node.bridge import at_time as bridge_at
from cu.node.bridge.node_hook import bridge_from_node
from cu.node.bridge.service import BridgeService
from cu.node.config import NodeConfig
from cu.node.core import EvaluatorCore
from cu.node.errors import BadInput, NotFound
from cu.node.exchange.bridged import BridgedOutbox
from cu.node.items import Identity
from cu.node.monitors import CronMonitors
from cu.node.store_sqlite import SqliteStore

BIG = 1 << 62
# answered on the RPC server's reading thread (cu/node/rpc_server.py) whatever they name: cheap, never evaluate
INLINE = frozenset({rpc.Notify, rpc.Flush, rpc.Metrics, rpc.WakeOutbox, rpc.StateDone})
SLOW_FOR_S = 10.0       # a process whose inline request was slow: its requests go to the pool this long


class Dispatcher:
    def __init__(self, core: EvaluatorCore, bridge: BridgeService | None = None) -> None:
        self.core = core
        self.bridge = bridge
        self.bridged_outbox: BridgedOutbox | None = None
        self._slow: dict[str, float] = {}         # pid -> until when its requests are not answered inline
        if bridge is not None and core.config.deliver_bridged:
            # --deliver-bridged: bridged processes' outbox messages to processes on this node
            self.bridged_outbox = BridgedOutbox(bridge, core.store, core.evaluator.outbox,
                                                core.identity.build_assignment, core.config.block_height,
                                                lambda pid: core.notify(pid, core.config.crank_delay_s))
        self._handlers: dict[type, Callable[[Any], Any]] = {
            rpc.Schedule: self._schedule, rpc.Result: self._result, rpc.DryRun: self._dry_run,
            rpc.State: self._state, rpc.StateChunk: self._state_chunk, rpc.StateDone: self._state_done,
            rpc.Cron: self._cron, rpc.Checkpoint: self._checkpoint, rpc.Now: self._now,
            rpc.ResultsPage: self._results_page, rpc.Flush: self._flush, rpc.Notify: self._notify,
            rpc.Metrics: self._metrics, rpc.Status: self._status, rpc.Monitor: self._monitor,
            rpc.WakeOutbox: self._wake_outbox,
        }
        # cron monitors (legacy MU /monitor): crons of monitored processes run unread (cu/node/monitors.py)
        cfg = core.config
        self.monitors = CronMonitors(cfg.data_dir, self._run_crons, core.evaluator.metrics,
                                     max_monitors=cfg.monitor_max, per_pass=cfg.monitor_per_pass,
                                     every_s=cfg.monitor_every_s, owns=core.owns)

    @classmethod
    def open(cls, config: NodeConfig, store: SqliteStore | None = None, identity: Identity | None = None,
             ) -> Dispatcher:
        """The evaluator of a data dir: its core and, with `config.bridge`, the legacynet bridge."""
        core = EvaluatorCore(config, store, identity)
        return cls(core, bridge_from_node(config, core.identity))

    @property
    def store(self) -> SqliteStore:
        return self.core.store

    def start(self) -> None:
        self.core.start()
        self.monitors.start()
        if self.bridged_outbox is not None and self.core.owns.leader:    # one per node (cu/node/shards.py)
            self.bridged_outbox.start()

    def stop(self) -> None:
        self.monitors.stop()
        self.core.stop()
        if self.bridge is not None:
            self.bridge.shutdown()

    def handle(self, req: Any) -> Any:
        handler = self._handlers.get(type(req))
        if handler is None:
            raise TypeError(f"not an evaluator request: {type(req).__name__}")
        return handler(req)

    def inline(self, req: Any) -> bool:
        """Whether `req` is cheap enough to answer on the RPC server's reading thread: a result of a warm process
        nobody is evaluating, scheduling while commits are quick, bookkeeping. Everything else (restores,
        dry-runs, state, crons, pages, a process that was slow lately) goes to its pool."""
        kind = type(req)
        if kind is rpc.Result:
            return not self._slow_lately(req.pid) and self.core.evaluator.quick(req.pid)
        if kind is rpc.Schedule:
            return not self._slow_lately(req.op.pid) and self.core.commits_quick()
        return kind in INLINE

    def was_slow(self, req: Any) -> None:
        """An inline request took long (cu/node/rpc_server.py TAKEOVER_S): its process's requests go to the pool
        for SLOW_FOR_S, so a process with slow messages does not take the reading thread again and again."""
        pid = getattr(req, "pid", None) or getattr(getattr(req, "op", None), "pid", None)
        if pid is None:
            return
        now = time.monotonic()
        if len(self._slow) > 1024:
            self._slow = {p: t for p, t in self._slow.items() if t > now}
        self._slow[pid] = now + SLOW_FOR_S

    def _slow_lately(self, pid: str) -> bool:
        until = self._slow.get(pid)
        return until is not None and until > time.monotonic()

    def after_reply(self) -> None:
        """After a request's reply is sent: the crank notifications it deferred."""
        self.core.flush_deferred()

    def _bridged(self, pid: str) -> BridgeService | None:
        """The bridge when `pid` is not scheduled here and a bridge is configured, else None (local)."""
        if self.bridge is not None and self.store.process(pid) is None:
            return self.bridge
        return None

    # handlers --------------------------------------------------------------------------------------------
    def _schedule(self, req: rpc.Schedule) -> rpc.Scheduled:
        entry, fresh = self.core.schedule(req.op, defer_notify=True)
        return rpc.Scheduled(entry, fresh)

    def _result(self, req: rpc.Result) -> rpc.Body:
        bridge = self._bridged(req.pid)
        ev = self.core.evaluator
        return rpc.Body(bridge.result(req.pid, req.message_id) if bridge else ev.result(req.pid, req.message_id))

    def _dry_run(self, req: rpc.DryRun) -> rpc.Body:
        bridge = self._bridged(req.pid)
        ev = self.core.evaluator
        if req.to is not None:       # legacy `to=`: against the state at that point
            at = {"timestamp": req.to.timestamp, "message_id": req.to.message_id}
            return rpc.Body(bridge_at.dry_run(bridge, req.pid, req.body, **at) if bridge
                            else at_time.dry_run(ev, req.pid, req.body, req.to))
        return rpc.Body(bridge.dry_run(req.pid, req.body) if bridge else ev.dry_run(req.pid, req.body))

    def _state(self, req: rpc.State) -> rpc.StateReply:
        bridge = self._bridged(req.pid)
        ev = self.core.evaluator
        if req.to is not None:       # legacy `to=`: the state at that point
            at = {"timestamp": req.to.timestamp, "message_id": req.to.message_id}
            got = bridge_at.state(bridge, req.pid, **at) if bridge else at_time.state(ev, req.pid, req.to)
            out = ev.exports.offer(*got)
            return rpc.StateReply(out.body, out.headers, out.length, out.digest, out.export)
        out = ev.exports.offer(*bridge.state(req.pid)) if bridge else ev.state(req.pid)
        return rpc.StateReply(out.body, out.headers, out.length, out.digest, out.export)

    def _state_chunk(self, req: rpc.StateChunk) -> rpc.Body:
        return rpc.Body(self.core.evaluator.exports.read(req.export, req.offset, req.size))

    def _state_done(self, req: rpc.StateDone) -> rpc.Done:
        self.core.evaluator.exports.release(req.export)
        return rpc.Done()

    def _run_crons(self, pid: str) -> None:
        """A monitored process up to now, crons included (its outbox delivered as after any evaluation). A bridged
        process's backlog is taken at most `monitor_budget` evaluations per pass, so a pass (and a shutdown
        waiting for it) stays short however far behind the scheduler's clock the process is."""
        bridge = self._bridged(pid)
        if bridge:
            bridge.cron(pid, budget=self.core.config.monitor_budget)
        else:
            self.core.evaluator.up_to_now(pid)

    def _monitor(self, req: rpc.Monitor) -> rpc.Body:
        if not req.on:
            changed = self.monitors.remove(req.pid)
            return rpc.Body(json.dumps({"monitored": False, "changed": changed}).encode())
        bridge = self._bridged(req.pid)
        if bridge is not None:
            crons = bridge.crons_of(req.pid)
        else:
            proc = self.store.process(req.pid)
            if proc is None:
                raise NotFound(f"Process {req.pid} not found")
            crons = any(n == "Cron-Interval" for n, _ in proc.tags)
        if not crons:
            raise BadInput(f"process {req.pid} has no Cron-Interval tag: it has no crons to monitor")
        changed = self.monitors.add(req.pid)
        return rpc.Body(json.dumps({"monitored": True, "changed": changed}).encode())

    def _cron(self, req: rpc.Cron) -> rpc.Done:
        bridge = self._bridged(req.pid)
        if bridge:
            bridge.cron(req.pid)
        else:
            self.core.evaluator.up_to_now(req.pid)
        return rpc.Done()

    def _checkpoint(self, req: rpc.Checkpoint) -> rpc.Done:
        self.core.evaluator.checkpoint(req.pid)
        return rpc.Done()

    def _now(self, req: rpc.Now) -> rpc.NowReply:
        """AO-Core `/now`: evaluate up to the newest slot, then the patch cache and the latest stored result."""
        out = self.core.evaluator.now(req.pid)
        self.store.flush()
        row = self.store.last_result(req.pid)
        last = None if row is None else rpc.LastResult(row.nonce, row.cron, row.message_id, row.body.decode("utf-8"))
        return rpc.NowReply(out["slot"], out["timestamp"], out["block_height"], out["cache"], last)

    def _results_page(self, req: rpc.ResultsPage) -> rpc.Page:
        bridge = self._bridged(req.pid)
        if bridge is None:
            if self.store.process(req.pid) is None:
                raise NotFound(f"Process {req.pid} not found")
            self.store.flush()     # results evaluated moments ago may still be queued for writing
        src: Any = bridge or self.store

        def bound(b: rpc.Bound | None) -> tuple[int, int] | None:
            if b is None:
                return None
            seq = None if b.ordinate is None else src.seq_for(req.pid, b.timestamp, b.ordinate, b.cron)
            if seq is None:
                return (b.timestamp, -1) if req.descending else (b.timestamp, BIG)
            return (b.timestamp, seq)
        rows, more = src.results_page(req.pid, after=bound(req.after), until=bound(req.until),
                                      descending=req.descending, limit=req.limit, crons_only=req.crons_only,
                                      skip_errors=req.skip_errors)
        return rpc.Page(rows, more)

    def _flush(self, _req: rpc.Flush) -> rpc.Done:
        self.store.flush()
        return rpc.Done()

    def _notify(self, req: rpc.Notify) -> rpc.Done:
        self.core.notify(req.pid)
        return rpc.Done()

    def _metrics(self, _req: rpc.Metrics) -> rpc.MetricsReply:
        ev = self.core.evaluator
        return rpc.MetricsReply({k: float(v) for k, v in ev.metrics.items()}, ev.warm(), self.core.queued())

    def _wake_outbox(self, _req: rpc.WakeOutbox) -> rpc.Done:
        self.core.deliverer.wake()
        return rpc.Done()

    def _status(self, req: rpc.Status) -> rpc.StatusReply:
        return status.facts(self, req)     # the status page's facts (cu/node/status.py)
