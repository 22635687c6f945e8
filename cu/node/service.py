"""The evaluator as a service: one evaluator per data dir (exclusive file lock), reached in-process
(embedded) or over a Unix socket from gunicorn workers. A crank thread evaluates newly scheduled messages
eagerly and delivers their outbox, like the legacy MU cranking results after it forwards a message."""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import msgpack

from cu.node.config import NodeConfig
from cu.node.errors import BadInput, Busy, CoreError, NotFound, Unavailable, from_kind
from cu.node.evaluator import Evaluator
from cu.node.items import Identity
from cu.node.store import ItemMeta, LogEntry, ScheduleOp, StoreError
from cu.node.store_sqlite import Job, SqliteStore

log = logging.getLogger("aocu.evaluator")

_LEN = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024
MAX_GROUP = 256          # ops per group commit
# Write-behind results (served from memory until stored) ride along with the next scheduling commit, or are
# committed by the crank thread this long after they were queued, whichever comes first.
WRITE_BEHIND_S = 0.005


def op_to_wire(op: ScheduleOp) -> dict[str, Any]:
    meta, raw = op.item if op.item is not None else (None, None)
    wire_meta = None
    if meta is not None:    # by hand: dataclasses.asdict deep-copies every field
        wire_meta = {"id": meta.id, "owner": meta.owner, "owner_key": meta.owner_key, "target": meta.target,
                     "anchor": meta.anchor, "signature": meta.signature, "tags": meta.tags, "kind": meta.kind,
                     "created_ms": meta.created_ms, "size": meta.size}
    return {"kind": op.kind, "pid": op.pid, "message_id": op.message_id, "module": op.module,
            "has_crons": op.has_crons, "meta": wire_meta, "raw": raw}


def op_from_wire(w: dict[str, Any]) -> ScheduleOp:
    item = None
    if w.get("meta") is not None:
        m = dict(w["meta"])
        m["tags"] = [(str(n), str(v)) for n, v in m["tags"]]
        m["owner_key"] = bytes(m["owner_key"])
        item = (ItemMeta(**m), bytes(w["raw"]))
    return ScheduleOp(str(w["kind"]), str(w["pid"]), str(w["message_id"]), item, str(w.get("module", "")),
                      bool(w.get("has_crons", False)))


class EvaluatorCore:
    """Evaluator + crank queue. All evaluation of a data dir happens in exactly one EvaluatorCore."""

    def __init__(self, config: NodeConfig, store: SqliteStore | None = None, identity: Identity | None = None,
                 ) -> None:
        self.config = config
        self.store = store or SqliteStore(config.db_path)
        self.identity = identity or Identity.load(config.data_dir, config.wallet)
        self.evaluator = Evaluator(config, self.store, self.identity)
        self.evaluator.on_delivery = self.notify
        # legacynet bridge (None unless `aocu serve --gateway`): processes scheduled on a legacy SU
        from cu.node.bridge.node_hook import bridge_from_node
        self.bridge = bridge_from_node(config, self.identity)
        self._due: dict[str, float] = {}         # pid -> monotonic time its crank is due
        self._flush_at: float | None = None       # when queued write-behind results must be committed
        self._crank_cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._commit_q: queue.Queue[tuple[Job, bool, Future]] = queue.Queue()
        self._commit_lock = threading.Lock()
        self._deferred = threading.local()
        self.store.writer = self._group_write
        self.store.async_writer = self._group_write_deferred

    def start(self) -> None:
        self._thread = threading.Thread(target=self._crank, name="aocu-crank", daemon=True)
        self._thread.start()
        # messages acknowledged before a stop may not have been evaluated yet
        for pid in self.store.all_processes():
            proc = self.store.process(pid)
            last = self.store.last_result(pid)
            if proc is not None and (last is None or last.nonce < proc.nonce):
                self.notify(pid)

    # group commit, leader-based: the first writer to find the store idle commits everything queued so far
    # in one transaction (one fsync) on its own thread; writers arriving meanwhile queue and are committed by
    # it or by the next leader. No writer thread, so no extra thread hand-offs on the acknowledgement path.
    def _group_write(self, jobs: list[Job], durable: bool) -> list[Any]:
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

    def _lead(self) -> None:
        while True:
            if not self._commit_lock.acquire(blocking=False):
                return              # the current leader re-checks the queue after it finishes
            try:
                batch: list[tuple[Job, bool, Future]] = []
                while len(batch) < MAX_GROUP:
                    try:
                        batch.append(self._commit_q.get_nowait())
                    except queue.Empty:
                        break
                if batch:
                    self._commit(batch)
            finally:
                self._commit_lock.release()
            if self._commit_q.empty():
                return

    def _commit(self, batch: list[tuple[Job, bool, Future]]) -> None:
        t0 = time.perf_counter()
        try:
            results = self.store.transact([job for job, _, _ in batch], any(d for _, d, _ in batch))
        except Exception as exc:  # noqa: BLE001 - the whole transaction failed: nothing acknowledged
            log.error("group commit of %d writes failed: %s", len(batch), exc)
            for _, _, fut in batch:
                fut.set_exception(Unavailable(f"could not write to the store: {exc}"))
            return
        m = self.evaluator.metrics
        m["commits"] = m.get("commits", 0) + 1
        m["commit_writes"] = m.get("commit_writes", 0) + len(batch)
        m["commit_seconds"] = m.get("commit_seconds", 0.0) + time.perf_counter() - t0
        for (_, _, fut), res in zip(batch, results, strict=True):
            if isinstance(res, Exception):
                fut.set_exception(res)
            else:
                fut.set_result(res)

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
                self._crank_cv.notify()

    def schedule(self, op: ScheduleOp, *, defer_notify: bool = False) -> tuple[LogEntry, bool]:
        (res,) = self.store.schedule_batch([op], int(time.time() * 1000), self.config.block_height,
                                           self.identity.build_assignment)
        if isinstance(res, Exception):
            raise NotFound(str(res)) if isinstance(res, StoreError) else res
        if res[1]:
            if op.kind == "message" and op.item is not None:
                self.evaluator.remember(res[0], op.item)
            if defer_notify:
                # cranked after the acknowledgement is sent: evaluation must not hold the GIL before it
                self._deferred.__dict__.setdefault("pids", []).append(res[0].pid)
            else:
                self.notify(res[0].pid, self.config.crank_delay_s)
        return res

    def flush_deferred(self) -> None:
        """After a request's reply is sent: its crank notifications."""
        for pid in self._deferred.__dict__.pop("pids", []):
            self.notify(pid, self.config.crank_delay_s)

    def notify(self, pid: str, delay_s: float = 0.0) -> None:
        """Evaluate `pid`'s unevaluated messages (and deliver their outbox) `delay_s` from now at the latest."""
        if not self.config.eager:
            return
        due = time.monotonic() + delay_s
        with self._crank_cv:
            cur = self._due.get(pid)
            if cur is not None and cur <= due:
                return
            self._due[pid] = due
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
                self._crank_cv.wait(min(times) - now if times else None)
        return None

    def _crank(self) -> None:
        while (work := self._next_due()) is not None:
            ready, flush = work
            if flush:
                self._lead()
            for pid in ready:
                try:
                    self.evaluator.settle([pid])
                except Exception as exc:  # noqa: BLE001 - the crank must survive any one process failing
                    log.error("evaluation of %s failed: %s", pid, exc)

    def stop(self) -> None:
        self._stopping.set()
        with self._crank_cv:
            self._crank_cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.evaluator.shutdown()           # checkpoints (and any queued write-behind results) are written
        self._lead()
        if self.bridge is not None:
            self.bridge.shutdown()

    # operations (same names over the socket) -------------------------------------------------------
    def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op.startswith("bridge_"):
            if self.bridge is None:
                raise NotFound(f"Process {args.get('pid')} not found")
            return self.bridge.call(op, args)
        ev = self.evaluator
        if op == "schedule":
            entry, fresh = self.schedule(op_from_wire(args["schedule"]), defer_notify=True)
            return {"entry": [entry.pid, entry.nonce, entry.message_id, entry.assignment_id, entry.timestamp,
                              entry.block_height, entry.hash_chain, entry.epoch], "fresh": fresh}
        if op == "flush":
            # every write queued so far (write-behind results) is in the store when this returns
            self.store.writer([lambda _c: None], False)
            return {}
        if op == "notify":
            self.notify(args["pid"])
            return {}
        if op == "result":
            return {"body": ev.result(args["pid"], args["message"])}
        if op == "dry_run":
            return {"body": ev.dry_run(args["pid"], args["body"])}
        if op == "state":
            mem, headers = ev.state(args["pid"])
            return {"body": mem, "headers": headers}
        if op == "cron":
            ev.up_to_now(args["pid"])
            return {}
        if op == "checkpoint":
            ev.checkpoint(args["pid"])
            return {}
        if op == "metrics":
            return {"metrics": dict(ev.metrics), "warm": ev.warm(), "queued": len(self._due)}
        if op == "now":
            return self._now(args["pid"])
        raise BadInput(f"unknown evaluator operation {op!r}")

    def _now(self, pid: str) -> dict[str, Any]:
        """AO-Core `/now`: evaluate up to the newest slot, then the patch cache and the latest stored result."""
        out = self.evaluator.now(pid)
        self.store.writer([lambda _c: None], False)     # the write-behind results are in the store
        row = self.store.last_result(pid)
        out["result"] = None if row is None else {"slot": row.nonce, "cron": row.cron, "message": row.message_id,
                                                  "body": row.body.decode("utf-8")}
        return out


class EmbeddedClient:
    def __init__(self, core: EvaluatorCore) -> None:
        self.core = core

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        try:
            return self.core.call(op, args)
        finally:
            self.core.flush_deferred()

    def submit(self, op: ScheduleOp) -> tuple[LogEntry, bool]:
        return self.core.schedule(op)


def _send(sock: socket.socket, obj: Any) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    sock.sendall(_LEN.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _recv(sock: socket.socket) -> Any:
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    (n,) = _LEN.unpack(head)
    if n > MAX_FRAME:
        raise ConnectionError("evaluator frame too large")
    body = _recv_exact(sock, n)
    if body is None:
        raise ConnectionError("evaluator connection closed mid-frame")
    return msgpack.unpackb(body, raw=False)


class SocketClient:
    """Per-thread persistent connection to the evaluator process."""

    def __init__(self, path: str | Path, connect_timeout_s: float = 10.0, reply_timeout_s: float = 60.0) -> None:
        self.path = str(path)
        self.connect_timeout_s = connect_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self._local = threading.local()

    def _sock(self) -> socket.socket:
        s = getattr(self._local, "sock", None)
        if s is None or getattr(self._local, "pid", None) != os.getpid():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            deadline = time.monotonic() + self.connect_timeout_s
            while True:
                try:
                    s.connect(self.path)
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.monotonic() > deadline:
                        s.close()
                        raise Unavailable("the evaluator is not running") from None
                    time.sleep(0.05)
            s.settimeout(self.reply_timeout_s)
            self._local.sock, self._local.pid = s, os.getpid()
        return s

    def _drop(self) -> None:
        s = getattr(self._local, "sock", None)
        if s is not None:
            s.close()
        self._local.sock = None

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        for attempt in (0, 1):
            s = self._sock()
            try:
                _send(s, {"op": op, "args": args})
                reply = _recv(s)
                if reply is None:
                    raise ConnectionError("evaluator closed the connection")
                break
            except TimeoutError:
                # the evaluator keeps working; this connection is out of step with it now
                self._drop()
                raise Busy(f"the evaluator did not answer within {self.reply_timeout_s:g} s") from None
            except (ConnectionError, OSError):
                self._drop()
                if attempt:
                    raise Unavailable("lost the connection to the evaluator") from None
        if not reply.get("ok"):
            raise from_kind(str(reply.get("kind", "internal")), str(reply.get("error", "evaluator error")))
        return reply.get("value") or {}

    def submit(self, op: ScheduleOp) -> tuple[LogEntry, bool]:
        out = self.call("schedule", schedule=op_to_wire(op))
        return LogEntry(*out["entry"]), bool(out["fresh"])


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        while True:
            try:
                req = _recv(sock)
            except (ConnectionError, OSError, ValueError):
                return
            if req is None:
                return
            try:
                value = self.server.core.call(str(req.get("op")), dict(req.get("args") or {}))
                reply = {"ok": True, "value": value}
            except CoreError as exc:
                reply = {"ok": False, "kind": exc.kind, "error": exc.message}
            except Exception as exc:  # noqa: BLE001 - report, keep serving other requests
                log.exception("evaluator operation failed")
                reply = {"ok": False, "kind": "internal", "error": f"evaluation failed: {exc}"}
            try:
                _send(sock, reply)
            except OSError:
                return
            finally:
                self.server.core.flush_deferred()


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, path: str, core: EvaluatorCore) -> None:
        self.core = core
        super().__init__(path, _Handler)


def acquire_lock(data_dir: Path) -> int:
    """Exclusive lock: at most one evaluator per data dir, released by the kernel if the process dies."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "evaluator.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"another evaluator owns {data_dir}") from None
    return fd


def serve_evaluator(config: NodeConfig, parent_pid: int | None = None) -> int:
    """Runs the evaluator process until SIGTERM/SIGINT (checkpoints on the way out) or the parent dies."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s evaluator %(levelname)s %(message)s")
    lock_fd = acquire_lock(config.data_dir)
    # many short Python bursts between native calls: hand the GIL over sooner than the 5 ms default
    sys.setswitchinterval(0.0005)
    core = EvaluatorCore(config)
    path = str(config.socket_path)
    if os.path.exists(path):
        os.unlink(path)   # stale: we hold the lock, so nobody else serves it
    server = _Server(path, core)
    os.chmod(path, 0o600)
    stop = threading.Event()

    def on_signal(_signo: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    core.start()
    log.info("evaluator serving %s", path)
    while not stop.wait(0.5):
        if parent_pid is not None and os.getppid() != parent_pid:
            log.warning("parent exited; stopping")
            break
    server.shutdown()
    server.server_close()
    core.stop()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.close(lock_fd)
    log.info("evaluator stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    import json
    args = sys.argv[1:] if argv is None else argv
    config = NodeConfig.from_mapping(json.loads(args[0]))
    parent = int(args[1]) if len(args) > 1 else None
    return serve_evaluator(config, parent)


if __name__ == "__main__":
    sys.exit(main())
