"""BridgeService: computes processes scheduled on legacy SUs and answers the legacy CU operations for them.

It owns, per remote process, one warm engine instance and the stream position (`Progress`); results, dedup keys
and progress are committed together in one SQLite transaction per batch, and engine snapshots are stored in the
same database. A failing SU or gateway ends the call with a clear `Unavailable` (UpstreamError) after bounded
retries, everything evaluated before the failure stays committed, and the next call continues from exactly that
position. Loading modules, evaluating one message, its result row and the read-only dry-run are the local
evaluator's (`cu.node.eval`); the stream, dedup and progress bookkeeping are the bridge's own."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cu.node import legacy
from cu.node.bridge import checkpoint as ckpt
from cu.node.bridge import normalise
from cu.node.bridge.config import BridgeConfig
from cu.node.bridge.errors import (
    AccessDenied,
    BridgeConflict,
    BridgeError,
    BridgeInternal,
    BridgeNotFound,
    BridgeNotImplemented,
    BridgeNotYet,
    StreamMalformed,
)
from cu.node.bridge.gateway import GatewayClient, TxMeta
from cu.node.bridge.net import check_base_url
from cu.node.bridge.remote import ProcessInfo, Progress, RemoteProcess, load_process
from cu.node.bridge.store import BridgeStore
from cu.node.bridge.su import SuClient
from cu.node.cron import parse_crons
from cu.node.eval.locks import KeyedLocks
from cu.node.eval.modules import ModuleCache, engine, instance_limits
from cu.node.eval.runner import Runner, dry_run_on, result_row
from cu.node.store import ResultRow

log = logging.getLogger("aocu.bridge")


@dataclass
class _Warm:
    info: ProcessInfo
    remote: RemoteProcess
    module: Any
    instance: Any
    env: bytes
    limits: dict[str, Any]
    progress: Progress
    since_snapshot: int = 0
    origin: str = "start"                      # start | snapshot | checkpoint:<id>


def _info_to_json(info: ProcessInfo) -> str:
    return json.dumps({"pid": info.pid, "su_url": info.su_url, "record": info.record,
                       "module": asdict(info.module)})


def _info_from_json(text: str) -> ProcessInfo:
    o = json.loads(text)
    m = o["module"]
    m["tags"] = [tuple(t) for t in m["tags"]]
    module = TxMeta(**m)
    rec = o["record"]
    tags = normalise.tags_of(rec["tags"])
    return ProcessInfo(pid=o["pid"], su_url=o["su_url"], record=rec, owner=normalise.owner_address(rec["owner"]),
                       tags=tags, module_id=dict(reversed(tags))["Module"], module=module,
                       origin_ts=int(rec["timestamp"]), origin_height=int(str(rec.get("block", "0"))),
                       crons=parse_crons(tags))


class BridgeService:
    def __init__(self, config: BridgeConfig, data_dir: str | Path, *, signer: Any = None) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.store = BridgeStore(self.data_dir / "bridge.sqlite")
        self.gateway = GatewayClient(config.gateway_url, config.graphql_url, config.uploader_url, config.retry)
        self.signer = signer                   # Arweave wallet for checkpoints we write
        self._sus: dict[str, SuClient] = {}
        self._warm: dict[str, _Warm] = {}
        self._lock = KeyedLocks()              # one per process: self._lock(pid)
        self.metrics: dict[str, float] = {"evaluations": 0, "eval_seconds": 0.0, "duplicates_skipped": 0,
                                          "snapshots": 0, "recompute_mismatch": 0, "upstream_errors": 0}
        self.runner = Runner(self.metrics)
        self._modules = ModuleCache(config.cache_dir, self._wasm)
        # called with the pid after each batch of results is committed (`aocu serve --deliver-bridged`:
        # cu/node/exchange/bridged.py delivers their outbox to processes on this node)
        self.on_commit: Callable[[str], None] | None = None

    # -- routing ------------------------------------------------------------------------------------------
    def allowed(self, pid: str) -> bool:
        return pid not in self.config.deny and (self.config.allow is None or pid in self.config.allow)

    def _check(self, pid: str) -> None:
        if not self.allowed(pid):
            raise AccessDenied(pid)

    def _su(self, url: str) -> SuClient:
        su = self._sus.get(url)
        if su is None:
            su = self._sus[url] = SuClient(url, self.config.retry)
        return su

    def locate(self, pid: str) -> str:
        """The process's scheduler URL: `--su-url`, else its Scheduler tag -> Scheduler-Location `Url`."""
        if pid in self.config.su_overrides:
            return self.config.su_overrides[pid]
        if self.config.su_url:
            return self.config.su_url
        tx = self.gateway.transaction(pid)
        scheduler = tx.tag("Scheduler")
        if not scheduler:
            raise BridgeNotFound(f"process {pid} has no Scheduler tag: cannot locate its scheduler")
        try:
            return check_base_url(self.gateway.scheduler_url(scheduler), "Scheduler-Location Url")
        except ValueError as exc:
            raise StreamMalformed(str(exc)) from None

    def module_of(self, pid: str) -> str:
        """The module id of a process the bridge has loaded."""
        w = self._warm.get(pid)
        if w is not None:
            return w.info.module_id
        meta = self.store.process_meta(pid)
        if meta is None:
            raise BridgeNotFound(f"process {pid} has not been loaded by the bridge")
        return _info_from_json(meta).module_id

    # -- warm state ---------------------------------------------------------------------------------------
    def _wasm(self, module_id: str) -> bytes:
        wasm = self.store.module(module_id)
        if wasm is None:
            wasm = self.gateway.raw(module_id)
            self.store.put_module(module_id, wasm)
        return wasm

    def _load(self, pid: str) -> _Warm:
        eng = engine()
        meta = self.store.process_meta(pid)
        if meta is None:
            su = self._su(self.locate(pid))
            info = load_process(pid, su, self.gateway)
            self.store.put_process_meta(pid, _info_to_json(info))
        else:
            info = _info_from_json(meta)
            su = self._su(info.su_url)
        fmt, limits = instance_limits(pid, info.tags, info.module.tags, memory_max=self.config.memory_max,
                                      compute_max=self.config.compute_max, timeout_s=self.config.eval_timeout_s)
        module = self._modules.get(info.module_id, fmt)
        remote = RemoteProcess(info, su, self.gateway, self.config.page_size)
        w = _Warm(info=info, remote=remote, module=module, instance=None, env=info.env(), limits=limits,
                  progress=Progress())
        snap = self.store.snapshot(pid)
        if snap is not None:
            try:
                w.instance = eng.Instance.restore(module, eng.Snapshot.from_bytes(snap[1]), **limits)
                w.progress, w.origin = snap[0], "snapshot"
            except eng.EngineError as exc:
                log.warning("snapshot of %s unusable (%s); starting over", pid, exc)
        if w.instance is None and self.config.checkpoint_owners and self.store.progress(pid) is None:
            self._adopt_checkpoint(w)
        if w.instance is None:
            w.instance = eng.Instance(module, **limits)
        return w

    def _warm_state(self, pid: str) -> _Warm:
        w = self._warm.get(pid)
        if w is None:
            w = self._warm[pid] = self._load(pid)
        return w

    # -- evaluation -----------------------------------------------------------------------------------------
    def compute(self, pid: str, *, to_nonce: int | None = None, to_ts: int | None = None,
                horizon_ts: int | None = None, budget: int | None = None) -> Progress:
        """Evaluates `pid` up to scheduled nonce `to_nonce`, or everything scheduled plus crons up to
        `horizon_ts`; with `budget`, at most that many evaluations (the rest waits for the next call: a
        background caller must not hold the process for a long cron backlog). Returns the progress reached."""
        self._check(pid)
        with self._lock(pid):
            w = self._warm_state(pid)
            if to_nonce is not None and to_nonce <= w.progress.nonce:
                return w.progress
            rows: list[ResultRow] = []
            pending: dict[str, int] = {}
            skipped: list[tuple[str, int, str]] = []

            def seen(key: str, nonce: int) -> bool:
                first = pending.get(key)
                if first is None:
                    first = self.store.dedup_nonce(pid, key)
                if first is not None and first < nonce:
                    return True
                if first is None:
                    pending[key] = nonce
                return False

            def flush() -> None:
                mismatched = self.store.commit(pid, w.progress, rows, pending, skipped)
                if mismatched:
                    self.metrics["recompute_mismatch"] += len(mismatched)
                    log.error("recomputed results of %s differ from the stored ones at seq %s", pid, mismatched)
                if rows and self.on_commit is not None:
                    try:
                        self.on_commit(pid)
                    except Exception as exc:  # noqa: BLE001 - handled again after the next committed batch
                        log.error("outbox of bridged process %s not delivered yet: %s", pid, exc)
                rows.clear()
                pending.clear()
                skipped.clear()

            try:
                for e in w.remote.stream(w.progress, seen=seen, to_nonce=to_nonce, to_ts=to_ts,
                                         horizon_ts=horizon_ts):
                    if e.kind == "duplicate":
                        self.metrics["duplicates_skipped"] += 1
                        skipped.append((e.message_id or "", e.nonce, e.dedup_key or ""))
                    else:
                        raw = self.runner.handle(w, legacy.dumps(e.msg))
                        w.since_snapshot += 1
                        if e.save:
                            rows.append(result_row(pid, e.progress.seq, e.nonce, e.cron, e.message_id, e.timestamp,
                                                   e.block_height, legacy.merge_result(raw)))
                    w.progress = e.progress
                    if len(rows) >= self.config.batch:
                        flush()
                    if budget is not None and e.kind != "duplicate":
                        budget -= 1
                        if budget <= 0:
                            break
                flush()
            except BridgeError as exc:
                # upstream or stream failure between entries: the warm state matches w.progress; keep it
                self.metrics["upstream_errors"] += 1
                flush()
                log.warning("bridge evaluation of %s stopped at nonce %d: %s", pid, w.progress.nonce, exc.message)
                raise
            except BaseException:
                # engine failure inside an evaluation: the warm state is unknown, rebuild from the last snapshot
                self._warm.pop(pid, None)
                raise
            if w.since_snapshot >= self.config.snapshot_every:
                self.snapshot(pid)
            return w.progress

    def snapshot(self, pid: str) -> None:
        with self._lock(pid):
            w = self._warm.get(pid)
            if w is None or w.since_snapshot == 0:
                return
            self.store.put_snapshot(pid, w.progress, w.instance.snapshot().to_bytes())
            w.since_snapshot = 0
            self.metrics["snapshots"] += 1

    def shutdown(self) -> None:
        for pid in list(self._warm):
            try:
                self.snapshot(pid)
            except Exception as exc:  # noqa: BLE001 - keep snapshotting the others
                log.error("snapshot of %s at shutdown failed: %s", pid, exc)
        self.store.close()

    # -- legacy CU operations ------------------------------------------------------------------------------------
    def result(self, pid: str, message_id: str) -> bytes:
        """The result of a scheduled message, by its id or by its assignment's id (a pure assignment is read by
        either, as the legacy CU answers)."""
        self._check(pid)
        row = self.store.result_by_message(pid, message_id)
        if row is not None:
            return row.body
        with self._lock(pid):
            skip = self.store.skipped(pid, message_id)
            if skip is None:
                w = self._warm_state(pid)
                # the process message is nonce 0 and its id is the process id, which the SU route reads as a page
                meta = (0, None) if message_id == pid else w.remote.su.message_meta(pid, message_id)
                if meta is None:
                    raise BridgeNotFound(f"Message {message_id} is not scheduled on process {pid}")
                nonce, ts = meta
                progress = self.compute(pid, to_nonce=nonce, to_ts=ts)
                row = self.store.result_by_message(pid, message_id) or self.store.result_by_nonce(pid, nonce)
                if row is not None:
                    return row.body
                skip = self.store.skipped(pid, message_id) or self.store.skipped_at(pid, nonce)
                if skip is None and nonce <= progress.nonce:
                    first = self.store.first_result_nonce(pid)
                    if first is None or nonce < first:
                        raise BridgeNotYet(f"message at nonce {nonce} of {pid} precedes the Arweave checkpoint this "
                                           f"node started the process from; its result was not computed here")
                    raise BridgeInternal(f"message at nonce {nonce} of {pid} was evaluated but its result is "
                                         f"missing")
            if skip is not None:
                raise BridgeNotFound(f"Message {message_id} at nonce {skip[0]} of {pid} was not evaluated: it is "
                                       f"a duplicate of an earlier message (dedup key {skip[1]})")
            raise BridgeInternal(f"evaluation of {message_id} produced no result")

    def _now(self, pid: str, budget: int | None = None) -> _Warm:
        """Everything scheduled, then crons up to the SU's current timestamp (as the legacy CU reads "latest");
        with `budget`, at most that many evaluations of it."""
        self._check(pid)
        with self._lock(pid):
            w = self._warm_state(pid)
            horizon = None
            if w.info.crons:
                horizon, _ = w.remote.su.timestamp(pid)
            self.compute(pid, horizon_ts=horizon, budget=budget)
            return self._warm[pid]

    def cron(self, pid: str, budget: int | None = None) -> None:
        self._now(pid, budget)

    def crons_of(self, pid: str) -> bool:
        """Whether the remote process has crons (loads its metadata from the SU and gateway if needed)."""
        self._check(pid)
        with self._lock(pid):
            return bool(self._warm_state(pid).info.crons)

    def state(self, pid: str) -> tuple[bytes, dict[str, str]]:
        with self._lock(pid):
            w = self._now(pid)
            return w.instance.memory(), {"Last-Timestamp": str(w.progress.last_ts),
                                         "Last-Ordinate": str(w.progress.nonce),
                                         "Last-Block-Height": str(w.progress.last_height)}

    def dry_run(self, pid: str, body: Any) -> bytes:
        with self._lock(pid):
            w = self._now(pid)
            return dry_run_on(w, body, pid=pid, timestamp=w.progress.last_ts, block_height=w.progress.last_height,
                              timeout_s=self.config.dry_run_timeout_s)

    def results_page(self, pid: str, **kw: Any) -> tuple[list[ResultRow], bool]:
        self._check(pid)
        return self.store.results_page(pid, **kw)

    def seq_for(self, pid: str, timestamp: int, nonce: int, cron: str | None) -> int | None:
        return self.store.seq_for(pid, timestamp, nonce, cron)

    def memory(self, pid: str) -> bytes:
        with self._lock(pid):
            return self._warm_state(pid).instance.memory()

    # -- Arweave checkpoints -----------------------------------------------------------------------------------
    def write_checkpoint(self, pid: str) -> str:
        """Uploads the current memory as a legacy-format checkpoint; returns its data item id. Only at a scheduled
        message (not after crons), where the legacy tags describe the position completely."""
        if self.signer is None:
            raise BridgeNotImplemented("writing Arweave checkpoints needs a wallet (signer)")
        with self._lock(pid):
            w = self._warm_state(pid)
            p = w.progress
            if p.nonce < 0 or p.crons_done:
                raise BridgeConflict(f"{pid} is not at a scheduled message (nonce {p.nonce}, "
                                       f"{p.crons_done} crons after it): no checkpoint written")
            memory = w.instance.memory()
            info = ckpt.CheckpointInfo(pid=pid, module=w.info.module_id, nonce=p.nonce, ordinate=str(p.nonce),
                                       timestamp=p.anchor_ts or 0, block_height=p.anchor_height or 0,
                                       sha256=hashlib.sha256(memory).hexdigest(),
                                       assignment_id=p.assignment_id, hash_chain=p.hash_chain, epoch=p.epoch)
            item = ckpt.build_checkpoint(memory, info, self.signer)
            self.gateway.upload(item.to_bytes())
            return item.id

    def _adopt_checkpoint(self, w: _Warm) -> None:
        pid = w.info.pid
        try:
            cands = self.gateway.checkpoints(pid, list(self.config.checkpoint_owners))
        except BridgeError as exc:
            log.warning("checkpoint query for %s failed (%s); replaying from the start", pid, exc.message)
            return
        infos: list[tuple[ckpt.CheckpointInfo, TxMeta]] = []
        for tx in cands:
            if tx.owner_address not in self.config.checkpoint_owners:
                continue
            try:
                info = ckpt.parse_info(tx.tags)
            except BridgeError as exc:
                log.warning("ignoring checkpoint %s of %s: %s", tx.id, pid, exc.message)
                continue
            # a checkpoint taken after crons lacks the anchor of the cron walk: not adoptable exactly
            if info.pid == pid and info.module == w.info.module_id and not info.cron_interval:
                infos.append((info, tx))
        for info, tx in sorted(infos, key=lambda it: -it[0].nonce):
            try:
                memory = ckpt.read_checkpoint(self.gateway.raw(tx.id), info)
                w.instance = ckpt.instance_from_memory(w.module, memory, **w.limits)
            except (BridgeError, ValueError) as exc:
                log.warning("checkpoint %s of %s unusable: %s", tx.id, pid, exc)
                continue
            w.progress = Progress(nonce=info.nonce, epoch=info.epoch or 0, assignment_id=info.assignment_id,
                                  hash_chain=info.hash_chain, cursor=str(info.timestamp), anchor_ts=info.timestamp,
                                  anchor_height=info.block_height, last_ts=info.timestamp,
                                  last_height=info.block_height, cold_started=True)
            w.origin = f"checkpoint:{tx.id}"
            keys: dict[str, int] = {}
            if self.config.rebuild_dedup:
                for key, nonce in w.remote.dedup_keys(info.nonce):
                    keys.setdefault(key, nonce)
            self.store.commit(pid, w.progress, [], keys, [])
            self.store.put_snapshot(pid, w.progress, w.instance.snapshot().to_bytes())
            log.info("process %s starts from Arweave checkpoint %s at nonce %d", pid, tx.id, info.nonce)
            return

    # -- status (the status page and GET /processes) ---------------------------------------------------------
    def _evaluating(self, pid: str) -> bool:
        """True while another thread evaluates `pid` (holds its lock); only asked for warm processes."""
        lock = self._lock(pid)
        if not lock.acquire(blocking=False):
            return True
        lock.release()
        return False

    def status_page(self, before: tuple[int, str] | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Remote processes newest activity first, with their live position: a warm process being evaluated
        (a replay) shows how far it got, ahead of what is committed."""
        rows = self.store.processes_page(before, limit)
        out = []
        for pid, meta, state in rows[:limit]:
            w = self._warm.get(pid)
            prog = w.progress if w is not None else Progress.from_json(state) if state else Progress()
            try:
                module = _info_from_json(meta).module_id
            except (KeyError, ValueError, TypeError):     # a record this version cannot read: listed all the same
                module = ""
            out.append({"pid": pid, "module": module, "slot": prog.nonce,
                        "evaluated": prog.seq + 1, "last_ts": prog.last_ts, "warm": w is not None,
                        "evaluating": w is not None and self._evaluating(pid)})
        return out, len(rows) > limit

    def status(self) -> dict[str, Any]:
        """Settings and counts, and every evaluation running now with its live and committed positions."""
        running = []
        for pid, w in list(self._warm.items()):
            if self._evaluating(pid):
                committed = self.store.progress(pid)
                running.append({"pid": pid, "slot": w.progress.nonce, "evaluated": w.progress.seq + 1,
                                "committed_slot": committed.nonce if committed else -1})
        return {"gateway": self.config.gateway_url, "su_url": self.config.su_url or "",
                "processes": self.store.process_count(), "warm": len(self._warm), "evaluating": running,
                "metrics": dict(self.metrics)}
