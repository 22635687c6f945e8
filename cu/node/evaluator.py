"""Evaluator (CU role): evaluates each process's log in slot order on the native engine, one warm instance per
active process, checkpoints every N evaluations and at shutdown, results stored per message, outbox
delivered to processes on this node as the legacy MU does, crons per AO-ABI §12.

One Evaluator object owns all processes of a data dir (the evaluator process holds an exclusive lock, see
service.py); a per-process lock serialises evaluation, so concurrent requests for the same result wait for
one evaluation and then read it."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import zstandard

from cu.node import cron, legacy
from cu.node.config import NodeConfig
from cu.node.errors import BadInput, CoreError, Internal, Invalid, NotFound, Unavailable
from cu.node.items import Identity, item_meta
from cu.node.limits import module_limits
from cu.node.store import Checkpoint, ItemMeta, LogEntry, Outgoing, ResultRow
from cu.node.store_sqlite import SqliteStore

log = logging.getLogger("aocu.evaluator")

BATCH = 64          # results written per transaction while catching up


def _engine() -> Any:
    try:
        import cu.engine as engine
        engine.Instance  # noqa: B018 - fail here, with a clear error, if the engine is not built
    except (ImportError, AttributeError) as exc:
        raise Unavailable(f"the native engine (cu.engine) is not available: {exc}") from None
    return engine


@dataclass
class ProcState:
    pid: str
    module_id: str
    module: Any
    instance: Any
    env: bytes
    crons: list[cron.Cron]
    owner: str
    process_ts: int
    process_height: int
    limits: dict[str, Any]
    seq: int = -1                  # last evaluated seq
    nonce: int = -1                # last evaluated scheduled nonce
    cron_ts: int | None = None     # last evaluated cron time after `nonce`
    last_ts: int = 0
    last_height: int = 0
    since_checkpoint: int = 0
    stored_seq: int = -1           # last result seq already in the store when this state was loaded


class Evaluator:
    def __init__(self, config: NodeConfig, store: SqliteStore, identity: Identity) -> None:
        self.config = config
        self.store = store
        self.identity = identity
        self.cache_dir = Path(config.module_cache or Path(config.data_dir) / "module-cache")
        self._procs: OrderedDict[str, ProcState] = OrderedDict()    # warm instances, least recently used first
        self._modules: dict[str, Any] = {}
        self._guard = threading.Lock()
        self._proc_locks: dict[str, threading.RLock] = {}
        self._pending: dict[tuple[str, str], bytes] = {}   # results evaluated but not yet written
        self._patch_cache: dict[str, dict[str, Any]] = {}   # pid -> merged patch@1.0 state (AO-Core /now)
        self._patch_unknown: set[str] = set()    # restored from a checkpoint without its patch cache
        # a fresh message's committed log entry and item, from scheduling until it is evaluated, so that its
        # evaluation reads neither the log nor the item back from the store
        self._recent: dict[str, dict[int, tuple[LogEntry, tuple[ItemMeta, bytes]]]] = {}   # pid -> nonce -> ...
        self._recent_ids: dict[tuple[str, str], int] = {}                                    # (pid, id) -> nonce
        # pids that received outbox deliveries are handed here (the crank queue) rather than evaluated
        # while a caller holds another process's lock
        self.on_delivery: Callable[[str], None] = lambda pid: self.settle([pid])
        self.metrics: dict[str, float] = {"evaluations": 0, "eval_seconds": 0.0, "checkpoints": 0,
                                          "recompute_mismatch": 0, "outbox_delivered": 0, "dry_runs": 0,
                                          "restores": 0, "restore_failures": 0}

    # warm instances -----------------------------------------------------------------------------
    def _lock_for(self, pid: str) -> threading.RLock:
        with self._guard:
            lk = self._proc_locks.get(pid)
            if lk is None:
                lk = self._proc_locks[pid] = threading.RLock()
            return lk

    def _module(self, module_id: str, fmt: str) -> Any:
        engine = _engine()
        mod = self._modules.get(module_id)
        if mod is None:
            wasm = self.store.item_data(module_id)
            if wasm is None:
                raise NotFound(f"Module {module_id} not found")
            try:
                mod = engine.Module.load(wasm, fmt, cache_dir=self.cache_dir)
            except engine.EngineError as exc:
                raise Invalid(f"Module {module_id} cannot be loaded: {exc}") from None
            self._modules[module_id] = mod
        return mod

    def _state(self, pid: str) -> ProcState:
        with self._guard:
            st = self._procs.get(pid)
            if st is not None:
                self._procs.move_to_end(pid)
                return st
        engine = _engine()
        proc = self.store.process(pid)
        if proc is None:
            raise NotFound(f"Process {pid} not found")
        module_meta = self.store.item_meta(proc.module)
        if module_meta is None:
            raise NotFound(f"Module {proc.module} not found")
        fmt, mem, compute = module_limits(pid, proc.tags, module_meta.tags, memory_max=self.config.memory_max,
                                          compute_max=self.config.compute_max)
        module = self._module(proc.module, fmt)
        limits = {"memory_limit": mem, "compute_limit": compute, "timeout_s": self.config.eval_timeout_s}
        env = legacy.dumps(legacy.env_object(pid=pid, process_owner=proc.owner, process_tags=proc.tags,
                                             module_id=proc.module, module_owner=module_meta.owner,
                                             module_tags=module_meta.tags))
        st = ProcState(pid=pid, module_id=proc.module, module=module, instance=None, env=env,
                       crons=cron.parse_crons(proc.tags), owner=proc.owner, process_ts=proc.timestamp,
                       process_height=proc.block_height, limits=limits, last_height=proc.block_height)
        cp = self.store.latest_checkpoint(pid)
        if cp is not None:
            try:
                snap = engine.Snapshot.from_bytes(zstandard.ZstdDecompressor().decompress(cp.snapshot))
                # verify: the restored memory must hash to the commitment stored with the checkpoint
                st.instance = engine.Instance.restore(module, snap, verify=True, **limits)
                st.seq, st.nonce, st.cron_ts, st.last_ts = cp.seq, cp.nonce, cp.cron_ts, cp.timestamp
                self.metrics["restores"] += 1
                self._load_patch_cache(pid, cp.seq)
                last = self.store.log_entry(pid, cp.nonce)
                st.last_height = last.block_height if last else proc.block_height
            except (engine.EngineError, zstandard.ZstdError) as exc:
                log.warning("checkpoint of %s at seq %d unusable (%s); evaluating from the start", pid, cp.seq, exc)
                self.metrics["restore_failures"] += 1
                st.instance = None
        if st.instance is None:
            st.instance = engine.Instance(module, **limits)
            self._reset_patch_cache(pid)     # every message is evaluated again from the start
        last = self.store.last_result(pid)
        st.stored_seq = last.seq if last is not None else -1
        with self._guard:
            self._procs[pid] = st
        self._evict()
        return st

    def _evict(self) -> None:
        """Bounded memory (permaweb/ao#837): beyond `max_warm` instances, checkpoint and drop the least
        recently used ones that are idle."""
        with self._guard:
            oldest = list(self._procs)[: max(0, len(self._procs) - self.config.max_warm)]
        for pid in oldest:
            lock = self._lock_for(pid)
            if not lock.acquire(blocking=False):
                continue
            try:
                st = self._procs.get(pid)
                if st is None:
                    continue
                if st.since_checkpoint:
                    self.checkpoint(pid)
                with self._guard:
                    self._procs.pop(pid, None)
            finally:
                lock.release()

    def remember(self, entry: LogEntry, item: tuple[ItemMeta, bytes]) -> None:
        """A message was durably scheduled (the store has it; this is only a shortcut)."""
        with self._guard:
            if len(self._recent_ids) >= 10_000:
                self._recent.clear()      # bounded: entries are normally consumed within milliseconds
                self._recent_ids.clear()
            meta, raw = item
            self._recent.setdefault(entry.pid, {})[entry.nonce] = (entry, (meta, raw[len(raw) - meta.size:]))
            self._recent_ids[(entry.pid, entry.message_id)] = entry.nonce

    def _recent_entry(self, pid: str, message_id: str) -> LogEntry | None:
        with self._guard:
            nonce = self._recent_ids.get((pid, message_id))
            got = self._recent.get(pid, {}).get(nonce) if nonce is not None else None
            return got[0] if got is not None else None

    def _recent_chunk(self, pid: str, first: int, last: int,
                      ) -> list[tuple[LogEntry, tuple[ItemMeta, bytes] | None]] | None:
        """Entries first..last from memory when all of them are there (else None: read the log)."""
        with self._guard:
            by_nonce = self._recent.get(pid)
            if not by_nonce or any(n not in by_nonce for n in range(first, last + 1)):
                return None
            return [by_nonce[n] for n in range(first, last + 1)]

    def _forget(self, entry: LogEntry) -> None:
        with self._guard:
            by_nonce = self._recent.get(entry.pid)
            if by_nonce is not None and by_nonce.pop(entry.nonce, None) is not None:
                self._recent_ids.pop((entry.pid, entry.message_id), None)
                if not by_nonce:
                    del self._recent[entry.pid]

    # message JSON -------------------------------------------------------------------------------
    def _message_json(self, st: ProcState, entry: LogEntry,
                      item: tuple[ItemMeta, bytes] | None = None) -> tuple[bytes, ItemMeta]:
        got = item or self.store.item_with_data(entry.message_id)
        if got is None:
            raise Internal(f"message {entry.message_id} of {st.pid} missing from the store")
        meta, data = got
        # a pure assignment (item not addressed to this process) keeps its own recipient as Target
        target = st.pid if entry.nonce == 0 or meta.target == st.pid else meta.target
        msg = legacy.scheduled_message(
            msg_id=meta.id, signature=meta.signature, data=data, owner=meta.owner, target=target,
            anchor=meta.anchor, tags=meta.tags, epoch=entry.epoch, nonce=entry.nonce, timestamp=entry.timestamp,
            block_height=entry.block_height, hash_chain=entry.hash_chain)
        return legacy.dumps(msg), meta

    def _handle(self, st: ProcState, msg: bytes) -> dict[str, Any]:
        t0 = time.perf_counter()
        raw = st.instance.handle(msg, st.env, keep_patches=True)
        self.metrics["evaluations"] += 1
        self.metrics["eval_seconds"] += time.perf_counter() - t0
        self._apply_patches(st.pid, raw)     # before the legacy merge drops `Patches`
        return legacy.merge_result(raw)

    # outbox (the legacy MU's crank) ---------------------------------------------------------------
    def _outgoing(self, st: ProcState, result: dict[str, Any], source: ItemMeta | None) -> list[Outgoing]:
        out: list[Outgoing] = []
        if result.get("Error") is not None:
            return out
        pushed_for = None
        if source is not None:
            pushed_for = next((v for n, v in source.tags if n == "Pushed-For"), None) or source.id
        idx = 0
        for m in result.get("Messages", []):
            if not isinstance(m, dict) or not isinstance(m.get("Target"), str) or not m["Target"]:
                idx += 1
                continue    # the MU drops outbox messages that fail its schema
            tags = [(t["name"], str(t["value"])) for t in m.get("Tags") or []
                    if isinstance(t, dict) and isinstance(t.get("name"), str) and t.get("value") is not None
                    and t["name"] not in ("Data-Protocol", "Type", "From-Process", "From-Module", "Assignments")]
            tags += [("Data-Protocol", "ao"), ("Type", "Message"), ("From-Process", st.pid),
                     ("From-Module", st.module_id)]
            if pushed_for:
                tags.append(("Pushed-For", pushed_for))
            data = m.get("Data", "")
            data_b = data.encode("utf-8") if isinstance(data, str) else legacy.dumps(data)
            try:
                item = self.identity.sign_item(data=data_b, tags=tags, target=m["Target"],
                                               anchor=m.get("Anchor") if isinstance(m.get("Anchor"), str) else None)
            except Exception as exc:  # noqa: BLE001 - a malformed outbox message is dropped like the MU does
                log.warning("dropping outbox message %d of %s: %s", idx, st.pid, exc)
                idx += 1
                continue
            meta = item_meta(item)
            out.append(Outgoing(idx, "Message", m["Target"], meta.id, item.to_bytes(), meta))
            idx += 1
        for s in result.get("Spawns", []):
            if not isinstance(s, dict):
                idx += 1
                continue
            tags = [(t["name"], str(t["value"])) for t in s.get("Tags") or []
                    if isinstance(t, dict) and isinstance(t.get("name"), str) and t.get("value") is not None
                    and t["name"] not in ("Data-Protocol", "Type", "Variant")]
            tags += [("Data-Protocol", "ao"), ("Type", "Process"), ("Variant", "ao.TN.1"),
                     ("From-Process", st.pid)]
            if pushed_for:
                tags.append(("Pushed-For", pushed_for))
            if not any(n == "Scheduler" for n, _ in tags):
                tags.append(("Scheduler", self.identity.address))
            data = s.get("Data", "NODATA")
            data_b = data.encode("utf-8") if isinstance(data, str) else legacy.dumps(data)
            try:
                item = self.identity.sign_item(data=data_b, tags=tags,
                                               anchor=s.get("Anchor") if isinstance(s.get("Anchor"), str) else None)
            except Exception as exc:  # noqa: BLE001
                log.warning("dropping spawn %d of %s: %s", idx, st.pid, exc)
                idx += 1
                continue
            meta = item_meta(item)
            out.append(Outgoing(idx, "Spawn", meta.id, meta.id, item.to_bytes(), meta))
            idx += 1
        for a in result.get("Assignments", []):
            if isinstance(a, dict) and isinstance(a.get("Message"), str) and isinstance(a.get("Processes"), list):
                for target in a["Processes"]:
                    if isinstance(target, str):
                        out.append(Outgoing(idx, "Assignment", target, a["Message"], None, None))
                        idx += 1
        return out

    # the evaluation loop ----------------------------------------------------------------------------
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
        new = self.store.put_results(rows, outgoing, int(time.time() * 1000), self.config.block_height,
                                     self.identity.build_assignment)
        self.metrics["outbox_delivered"] += len(new)
        rows.clear()
        outgoing.clear()
        return sorted({e.pid for e in new})

    def _evaluate_one(self, st: ProcState, msg: bytes, *, nonce: int, cron_id: str | None,
                      message_id: str | None, timestamp: int, height: int, source: ItemMeta | None,
                      rows: list[ResultRow], outgoing: dict[int, list[Outgoing]]) -> None:
        result = self._handle(st, msg)
        st.seq += 1
        body = legacy.dumps(legacy.result_view(result))     # stored as `/result` answers it
        rows.append(ResultRow(st.pid, st.seq, nonce, cron_id, message_id, timestamp, height,
                              result.get("Error") is not None, body))
        outs = self._outgoing(st, result, source)
        if outs:
            outgoing[st.seq] = outs
        st.since_checkpoint += 1

    def _crons(self, st: ProcState, right_ts: int, rows: list[ResultRow],
               outgoing: dict[int, list[Outgoing]]) -> None:
        if not st.crons or st.nonce < 0:
            return
        fires = cron.crons_between(st.crons, process_ts=st.process_ts, process_height=st.process_height,
                                   left_ts=st.last_ts, left_height=st.last_height, right_ts=right_ts,
                                   height=self.config.block_height, after_ts=st.cron_ts)
        for f in fires:
            msg = legacy.dumps(legacy.cron_message(owner=st.owner, target=st.pid, tags=f.cron.tags,
                                                   timestamp=f.timestamp, block_height=f.block_height))
            self._evaluate_one(st, msg, nonce=st.nonce, cron_id=f.cron.id, message_id=None,
                               timestamp=f.timestamp, height=f.block_height, source=None, rows=rows,
                               outgoing=outgoing)
            st.cron_ts = f.timestamp

    def catch_up(self, pid: str, to_nonce: int | None = None, cron_horizon: int | None = None) -> list[str]:
        """Evaluates the log of `pid` up to `to_nonce` (default: everything scheduled), and crons up to
        `cron_horizon` (exclusive) after the last message. Returns pids that received outbox deliveries."""
        with self._lock_for(pid):
            st = self._state(pid)
            if to_nonce is not None and self._recent_chunk(pid, to_nonce, to_nonce) is not None:
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
                    chunk = self._recent_chunk(pid, st.nonce + 1, upto) or [
                        (e, None) for e in self.store.log_range(pid, st.nonce + 1, upto)]
                    if not chunk:
                        raise Internal(f"log of {pid} has a gap after nonce {st.nonce}")
                    # small backlogs flush per message, so waiting readers see their result at once
                    batch = 1 if target - st.nonce <= 16 else BATCH
                    for entry, item in chunk:
                        self._crons(st, entry.timestamp, rows, outgoing)
                        msg, source = self._message_json(st, entry, item)
                        self._forget(entry)
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
                with self._guard:
                    self._procs.pop(pid, None)
                raise
            if st.since_checkpoint >= self.config.checkpoint_every:
                self.checkpoint(pid)
            touched.discard(pid)
        if len(self._procs) > self.config.max_warm:
            self._evict()      # retried here: an instance busy at load time is idle now
        return sorted(touched)

    def settle(self, pids: list[str]) -> None:
        """Evaluates processes that received outbox messages, transitively (the MU's crank)."""
        pending = list(pids)
        seen = 0
        while pending and seen < 10_000:
            pid = pending.pop(0)
            seen += 1
            try:
                pending.extend(p for p in self.catch_up(pid) if p not in pending)
            except CoreError as exc:
                log.warning("crank of %s failed: %s", pid, exc.message)

    # reads ----------------------------------------------------------------------------------------
    def pending(self, pid: str, message_id: str) -> bytes | None:
        return self._pending.get((pid, message_id))

    def result(self, pid: str, message_id: str) -> bytes:
        body = self._pending.get((pid, message_id))
        if body is not None:
            return body
        recent = self._recent_entry(pid, message_id)
        row = None if recent is not None else self.store.result_by_message(pid, message_id)
        if row is None:
            entry = recent if recent is not None else self.store.log_entry_by_message(pid, message_id)
            if entry is None:
                if self.store.process(pid) is None:
                    raise NotFound(f"Process {pid} not found")
                raise NotFound(f"Message {message_id} is not scheduled on process {pid}")
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
        return self._procs[pid]

    def dry_run(self, pid: str, body: Any) -> bytes:
        with self._lock_for(pid):
            st = self.up_to_now(pid)
            out = dry_run_on(st, body, pid=pid, timestamp=st.last_ts, block_height=st.last_height)
            self.metrics["dry_runs"] += 1
            return out

    def state(self, pid: str) -> tuple[bytes, dict[str, str]]:
        with self._lock_for(pid):
            st = self.up_to_now(pid)
            return st.instance.memory(), {"Last-Timestamp": str(st.last_ts), "Last-Ordinate": str(st.nonce),
                                          "Last-Block-Height": str(st.last_height)}

    # checkpoints --------------------------------------------------------------------------------------
    def checkpoint(self, pid: str) -> None:
        with self._lock_for(pid):
            st = self._procs.get(pid)
            if st is None or st.seq < 0:
                return
            snap = st.instance.snapshot()
            blob = zstandard.ZstdCompressor(level=3).compress(snap.to_bytes())
            self.store.put_checkpoint(Checkpoint(pid, st.seq, st.nonce, st.cron_ts, st.last_ts, snap.module_hash,
                                                 bytes(snap.memory_root), blob))
            st.since_checkpoint = 0
            self.metrics["checkpoints"] += 1
            self._save_patch_cache(pid, st.seq)

    def shutdown(self) -> None:
        with self._guard:
            warm = list(self._procs.items())
        for pid, st in warm:
            if st.since_checkpoint:
                try:
                    self.checkpoint(pid)
                except Exception as exc:  # noqa: BLE001 - keep checkpointing the others
                    log.error("checkpoint of %s at shutdown failed: %s", pid, exc)

    def warm(self) -> int:
        return len(self._procs)

    # AO-Core direct state reads (patch@1.0 cache) ------------------------------------------------------
    def _apply_patches(self, pid: str, raw: Any) -> None:
        if not isinstance(raw, dict) or raw.get("Error") is not None:
            return
        patches = patches_of(raw)
        if not patches:
            return
        cache = self._patch_cache.setdefault(pid, {})
        for p in patches:
            merge_patch(cache, p)

    def now(self, pid: str) -> dict[str, Any]:
        """Evaluates `pid` up to its newest slot (and due crons), then its slot and patch@1.0 cache (None when
        it cannot be known: restored from a checkpoint written without it)."""
        with self._lock_for(pid):
            st = self.up_to_now(pid)
            cache = None if pid in self._patch_unknown else json.loads(json.dumps(self._patch_cache.get(pid, {})))
            return {"slot": st.nonce, "timestamp": st.last_ts, "block_height": st.last_height, "cache": cache}

    # The patch cache is saved next to every checkpoint (same seq), so a restored process has it too.
    def _patch_path(self, pid: str) -> Path:
        return Path(self.config.data_dir) / "patch-cache" / f"{pid}.json"

    def _reset_patch_cache(self, pid: str) -> None:
        self._patch_cache.pop(pid, None)
        self._patch_unknown.discard(pid)

    def _save_patch_cache(self, pid: str, seq: int) -> None:
        path = self._patch_path(pid)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps({"seq": seq, "unknown": pid in self._patch_unknown,
                                       "cache": self._patch_cache.get(pid, {})}))
            os.replace(tmp, path)
        except OSError as exc:
            log.error("patch cache of %s at seq %d not saved: %s", pid, seq, exc)

    def _load_patch_cache(self, pid: str, seq: int) -> None:
        self._reset_patch_cache(pid)
        try:
            obj = json.loads(self._patch_path(pid).read_text())
            ok = obj.get("seq") == seq and isinstance(obj.get("cache"), dict) and not obj.get("unknown")
        except (OSError, ValueError, AttributeError):
            ok = False
        if ok:
            self._patch_cache[pid] = obj["cache"]
        else:
            self._patch_unknown.add(pid)
            log.warning("patch cache of %s at checkpoint seq %d unavailable: /now serves no cache", pid, seq)


class WarmInstance(Protocol):
    """What a read-only evaluation needs of a warm process (ProcState here, the bridge's remote processes)."""
    instance: Any
    module: Any
    env: bytes
    limits: dict[str, Any]


def dry_run_on(warm: WarmInstance, body: Any, *, pid: str, timestamp: int, block_height: int) -> bytes:
    """The legacy `/dry-run`: `body` evaluated on the warm instance read-only (the pre-run memory is restored,
    even when the evaluation fails). Returns the result as `/dry-run` answers it."""
    try:
        msg = legacy.dry_run_message(body, pid=pid, timestamp=timestamp, block_height=block_height)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    snap = warm.instance.snapshot()
    try:
        raw = warm.instance.handle(legacy.dumps(msg), warm.env)
    finally:
        warm.instance = _engine().Instance.restore(warm.module, snap, **warm.limits)
    return legacy.dumps(legacy.result_view(legacy.merge_result(raw)))


PATCH_DEVICE = "patch@1.0"
# message fields that address or describe a patch message rather than being state
PATCH_RESERVED = frozenset({"device", "target", "anchor", "tags", "data-protocol", "variant", "type", "reference",
                            "patch-from", "patch-to"})


def patches_of(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """AOS state patches of a raw result: `Patches` entries, and outbox messages addressed to the patch@1.0
    device (`Send({device = 'patch@1.0', ...})`: a `device` field or tag)."""
    out: list[dict[str, Any]] = [p for p in raw.get("Patches") or [] if isinstance(p, dict)]
    for m in raw.get("Messages") or []:
        if not isinstance(m, dict):
            continue
        fields = {k: v for k, v in m.items() if k != "Tags"}
        for t in m.get("Tags") or []:
            if isinstance(t, dict) and isinstance(t.get("name"), str):
                fields.setdefault(t["name"], t.get("value"))
        if any(k.lower() == "device" and v == PATCH_DEVICE for k, v in fields.items()):
            out.append(fields)
    return out


def merge_patch(cache: dict[str, Any], patch: dict[str, Any]) -> None:
    """Deep-merges one patch into the process's cache (tables merge key by key, other values replace)."""
    _deep_merge(cache, {k: v for k, v in patch.items() if isinstance(k, str) and k.lower() not in PATCH_RESERVED})


def _deep_merge(cache: dict[str, Any], patch: dict[str, Any]) -> None:
    for k, v in patch.items():
        cur = cache.get(k)
        if isinstance(v, dict) and isinstance(cur, dict):
            _deep_merge(cur, v)
        else:
            cache[k] = json.loads(json.dumps(v))


def result_cursor(row: ResultRow, sort: str) -> str:
    import base64
    obj: dict[str, Any] = {"timestamp": row.timestamp, "ordinate": str(row.nonce)}
    if row.cron:
        obj["cron"] = row.cron
    obj["sort"] = sort
    return base64.b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode()
