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
from pathlib import Path
from typing import Any

import msgpack

from cu.node.config import NodeConfig
from cu.node.errors import NodeError
from cu.node.evaluator import Evaluator
from cu.node.items import Identity
from cu.node.store_sqlite import SqliteStore

log = logging.getLogger("aocu.evaluator")

_LEN = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024


class EvaluatorCore:
    """Evaluator + crank queue. All evaluation of a data dir happens in exactly one EvaluatorCore."""

    def __init__(self, config: NodeConfig, store: SqliteStore | None = None, identity: Identity | None = None,
                 ) -> None:
        self.config = config
        self.store = store or SqliteStore(config.db_path)
        self.identity = identity or Identity.load(config.data_dir, config.wallet)
        self.evaluator = Evaluator(config, self.store, self.identity)
        self.evaluator.on_delivery = self.notify
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._queued: set[str] = set()
        self._qlock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._crank, name="aocu-crank", daemon=True)
        self._thread.start()
        # messages acknowledged before a stop may not have been evaluated yet
        for pid in self.store.all_processes():
            proc = self.store.process(pid)
            last = self.store.last_result(pid)
            if proc is not None and (last is None or last.nonce < proc.nonce):
                self.notify(pid)

    def notify(self, pid: str) -> None:
        if not self.config.eager:
            return
        with self._qlock:
            if pid in self._queued:
                return
            self._queued.add(pid)
        self._queue.put(pid)

    def _crank(self) -> None:
        while not self._stopping.is_set():
            pid = self._queue.get()
            if pid is None:
                return
            with self._qlock:
                self._queued.discard(pid)
            try:
                self.evaluator.settle([pid])
            except Exception as exc:  # noqa: BLE001 - the crank must survive any one process failing
                log.error("evaluation of %s failed: %s", pid, exc)

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.evaluator.shutdown()

    # operations (same names over the socket) -------------------------------------------------------
    def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        ev = self.evaluator
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
            return {"metrics": dict(ev.metrics), "warm": ev.warm(), "queued": self._queue.qsize()}
        raise NodeError(400, f"unknown evaluator operation {op!r}")


class EmbeddedClient:
    def __init__(self, core: EvaluatorCore) -> None:
        self.core = core

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        return self.core.call(op, args)


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

    def __init__(self, path: str | Path, connect_timeout_s: float = 10.0) -> None:
        self.path = str(path)
        self.connect_timeout_s = connect_timeout_s
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
                        raise NodeError(503, "the evaluator is not running") from None
                    time.sleep(0.05)
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
            except (ConnectionError, OSError):
                self._drop()
                if attempt:
                    raise NodeError(503, "lost the connection to the evaluator") from None
        if not reply.get("ok"):
            raise NodeError(int(reply.get("status", 500)), str(reply.get("error", "evaluator error")))
        return reply.get("value") or {}


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
            except NodeError as exc:
                reply = {"ok": False, "status": exc.status, "error": exc.message}
            except Exception as exc:  # noqa: BLE001 - report, keep serving other requests
                log.exception("evaluator operation failed")
                reply = {"ok": False, "status": 500, "error": f"evaluation failed: {exc}"}
            try:
                _send(sock, reply)
            except OSError:
                return


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
