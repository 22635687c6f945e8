"""The evaluator process (`python -m cu.node.service CONFIG_JSON [PARENT_PID]`): one per shard of a data dir
(exclusive file lock; `aocu serve --evaluators N` runs N shards, cu/node/shards.py), serving the typed evaluator
RPC (`cu.node.rpc`) on a Unix socket to the gunicorn workers (`cu.node.rpc_server`)."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from cu.node import logconf, shards
from cu.node.config import NodeConfig
from cu.node.dispatch import Dispatcher
from cu.node.rpc_server import RpcServer

log = logging.getLogger("aocu.evaluator")
ORPHAN_GRACE_S = 3.0     # an orphaned evaluator's orderly stop, then it exits anyway


def listen(path: str) -> socket.socket:
    """The evaluator's Unix socket, bound at `path` (0600) and listening."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


class DataDirInUse(RuntimeError):
    """Another evaluator holds DATA-DIR/evaluator.lock (or the lock of the shard asked for)."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        self.data_dir, self.pid = data_dir, pid
        super().__init__(f"data dir {data_dir} is in use by " + (f"PID {pid}" if pid else "another process"))


def acquire_lock(data_dir: Path, shard: int = 0) -> int:
    """Exclusive lock: at most one evaluator per shard of a data dir (shard 0: DATA-DIR/evaluator.lock, which also
    stands for the node), released by the kernel if the process dies. The holder writes its PID into the lock
    file, so a second node can name it (cu/serve/supervisor.py)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(shards.lock_file(data_dir, shard), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        raise DataDirInUse(data_dir, int(text) if text.isdigit() else None) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def serve_evaluator(config: NodeConfig, parent_pid: int | None = None) -> int:
    """Runs the evaluator process until SIGTERM/SIGINT (checkpoints on the way out) or the parent dies."""
    logconf.configure(config.log_level, config.log_format)   # as `aocu serve --log-level/--log-format` asked
    lock_fd = acquire_lock(config.data_dir, config.shard)
    # many short Python bursts between native calls: hand the GIL over sooner than the 5 ms default
    sys.setswitchinterval(0.0005)
    dispatcher = Dispatcher.open(config)
    assert config.socket_path is not None
    path = str(shards.socket_for(config.socket_path, config.shard))
    if os.path.exists(path):
        os.unlink(path)   # stale: we hold the lock, so nobody else serves it
    server = RpcServer(listen(path), dispatcher)
    stop = threading.Event()

    def on_signal(_signo: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=server.serve_forever, name="aocu-rpc", daemon=True).start()
    dispatcher.start()
    log.info("evaluator serving %s (shard %d of %d)", path, config.shard, config.evaluators)
    while not stop.wait(0.5):
        if parent_pid is not None and os.getppid() != parent_pid:
            # orphaned (the master was killed): nobody will wait for a checkpoint, and an evaluation in flight
            # (up to --eval-timeout) must not keep this process alive; the log and results are in the store
            log.warning("parent exited; stopping (at most %g s)", ORPHAN_GRACE_S)
            threading.Timer(ORPHAN_GRACE_S, exit_now, (0,)).start()
            break
    server.shutdown()
    server.server_close()
    dispatcher.stop()
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
    try:
        return serve_evaluator(config, parent)
    except DataDirInUse as exc:
        # lost a start race to another node: one line (the supervisor reports it to the operator too)
        print(f"aocu evaluator: {exc}", file=sys.stderr)
        return 75    # EX_TEMPFAIL


def exit_now(code: int) -> None:
    """Ends the process without interpreter finalization: a daemon thread (an RPC handler or the crank) that
    comes back from a native evaluation while the interpreter finalizes is ended by pthread_exit, whose forced
    unwind through the engine binding's GIL re-acquiring (noexcept) destructor aborts the process with
    `terminate called without an active exception`. Everything durable is committed before this is called."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
