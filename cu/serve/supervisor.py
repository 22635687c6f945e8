"""Supervision of the evaluator processes next to the gunicorn master (one per shard, `--evaluators N`,
cu/node/shards.py): started before the workers, each restarted on its own when it dies (its state is rebuilt
from the store: checkpoints + log), stopped with SIGTERM so they checkpoint.

One node per data dir: each shard holds an exclusive flock on its lock file (shard 0: DATA-DIR/evaluator.lock,
shard i: evaluator-i.lock) and writes its PID into it (cu/node/service.py `acquire_lock`). A node whose data dir
is held by another process (any shard lock not held by this node's own shards) stops at once with `data dir D is
in use by PID N`, and a running node whose evaluator cannot restart because another node took the data dir
gives up (and shuts down) instead of restarting it forever.

The gunicorn master reaps every child with waitpid(-1) on SIGCHLD, the evaluator included; a status reaped there
would be lost (subprocess then reports 0), so the master's waitpid is routed through `waitpid` here, which keeps
the evaluator's status for the supervisor whichever thread reaps it."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import cu
from cu.node import shards
from cu.node.config import NodeConfig

log = logging.getLogger("aocu.serve")

LOCK_FILE = "evaluator.lock"      # the file cu/node/service.py acquire_lock locks
START_TIMEOUT_S = 30.0
MAX_BACKOFF_S = 30.0


_reap_lock = threading.Lock()
_watched: set[int] = set()          # evaluator PIDs whose exit status is wanted
_statuses: dict[int, int] = {}      # PID -> raw wait status, when reaped by someone else's waitpid


def waitpid(pid: int, options: int) -> tuple[int, int]:
    """os.waitpid that keeps the raw status of a supervised evaluator, whoever reaps it."""
    with _reap_lock:
        wpid, status = os.waitpid(pid, options)
        if wpid in _watched:
            _statuses[wpid] = status
        return wpid, status


class _OsReapingThroughSupervisor:
    """`os` as the gunicorn arbiter module sees it: every attribute of os, waitpid through `waitpid` above."""

    waitpid = staticmethod(waitpid)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def keep_exit_statuses(arbiter_module: Any) -> None:
    """Routes the gunicorn arbiter's reaping (`gunicorn.arbiter`) through `waitpid`."""
    if not isinstance(arbiter_module.os, _OsReapingThroughSupervisor):
        arbiter_module.os = _OsReapingThroughSupervisor()


def exit_status(proc: subprocess.Popen) -> int | None:
    """The raw wait status of `proc` once it has exited (None while it runs; -1 when it was reaped by code
    that did not keep the status). Sets proc.returncode like Popen.poll."""
    with _reap_lock:
        status = _statuses.pop(proc.pid, None)
        if status is None and proc.returncode is None:
            try:
                wpid, status = os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:
                wpid, status = proc.pid, -1
            if wpid == 0:
                return None
        elif status is None:
            return -1 if proc.returncode is None else _raw(proc.returncode)
        _watched.discard(proc.pid)
        proc.returncode = os.waitstatus_to_exitcode(status) if status != -1 else -1
        return status


def _raw(returncode: int) -> int:
    return (-returncode) & 0x7F if returncode < 0 else (returncode & 0xFF) << 8


def describe_exit(status: int) -> str:
    """`killed by SIGKILL` / `exited with status 3`: what the log says about an evaluator that ended."""
    if status == -1:
        return "exited (status unknown)"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"was killed by {name}" + (" (out of memory?)" if sig == signal.SIGKILL else "")
    return f"exited with status {os.WEXITSTATUS(status)}"


class DataDirInUse(SystemExit):
    """`aocu serve` cannot run: another process holds the data dir (a SystemExit: cu.cli prints one line)."""

    def __init__(self, data_dir: Path, pid: int) -> None:
        self.data_dir, self.pid = data_dir, pid
        super().__init__(f"data dir {data_dir} is in use by " + (f"PID {pid}" if pid else "another process"))


def _listening(path: Path) -> bool:
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False    # absent, or a stale file left by an evaluator that died


def _pid_in_file(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flock_owner(path: Path) -> int | None:
    """The PID /proc/locks names for a FLOCK on `path`'s inode (None when unknown)."""
    try:
        st = path.stat()
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        f = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (blocked waiters carry a "->" field first)
        if len(f) >= 6 and f[1] == "FLOCK" and f[5].rsplit(":", 1)[-1] == str(st.st_ino) and f[4].isdigit():
            major, minor = f[5].split(":")[:2]
            if int(major, 16) == os.major(st.st_dev) and int(minor, 16) == os.minor(st.st_dev):
                return int(f[4])
    return None


def _holder(path: Path) -> int | None:
    """Who holds the lock file `path`: its PID, 0 when held by a process that cannot be named, None when free
    (or absent). Probes with a non-blocking flock that is released at once."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
    finally:
        os.close(fd)
    pid = _pid_in_file(path)
    if pid is not None and _alive(pid):
        return pid
    return _flock_owner(path) or 0


def lock_holder(data_dir: Path, shard: int = 0) -> int | None:
    """Who holds a shard's lock (shard 0: DATA-DIR/evaluator.lock): see `_holder`."""
    return _holder(shards.lock_file(data_dir, shard))


def check_data_dir(data_dir: Path, ours: Collection[int] = ()) -> None:
    """Raises DataDirInUse when a process other than `ours` (this node's running shards) holds one of the data
    dir's evaluator locks (shard 0's first: it names the node)."""
    first = shards.lock_file(data_dir, 0)
    for path in [first, *(p for p in shards.lock_files(data_dir) if p != first)]:
        holder = _holder(path)
        if holder is not None and holder not in ours:
            raise DataDirInUse(Path(data_dir), holder)


def shard_config(config: NodeConfig, shard: int) -> NodeConfig:
    """Shard `shard`'s configuration: the node's, with its share of the warm-instance limits (--max-warm and
    --max-memory are the node's, split evenly between its evaluator shards)."""
    n = config.evaluators
    if n == 1:
        return config
    return NodeConfig.from_mapping({**config.to_mapping(), "shard": shard, "max_warm": -(-config.max_warm // n),
                                    "max_memory": max(1, config.max_memory // n)})


def _spawn(config: NodeConfig) -> subprocess.Popen:
    env = dict(os.environ)
    # The evaluator imports the same `cu` as this process: its package root via PYTHONPATH, and -P so that
    # the working directory (e.g. a source checkout without the built extension) is not put first on sys.path.
    env["PYTHONPATH"] = os.pathsep.join([str(Path(cu.__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    with _reap_lock:     # registered before anyone can reap it
        proc = subprocess.Popen([sys.executable, "-P", "-m", "cu.node.service", json.dumps(config.to_mapping()),
                                 str(os.getpid())], env=env)
        _watched.add(proc.pid)
    return proc


def _await(config: NodeConfig, proc: subprocess.Popen, ours: Collection[int]) -> None:
    """Waits until the shard process `proc` holds its lock and serves its socket."""
    deadline = time.monotonic() + START_TIMEOUT_S
    assert config.socket_path is not None
    lock = shards.lock_file(config.data_dir, config.shard)
    sock = shards.socket_for(config.socket_path, config.shard)
    what = "the evaluator" if config.evaluators == 1 else f"evaluator shard {config.shard}"
    # ready = this child holds the lock (its PID is in the lock file) and its socket answers; a socket alone
    # could be another node's evaluator on the same data dir
    while not (_pid_in_file(lock) == proc.pid and _listening(sock)):
        status = exit_status(proc)
        if status is not None:
            check_data_dir(config.data_dir, ours)     # lost the lock to another node in between
            raise SystemExit(f"aocu serve: {what} {describe_exit(status)}")
        if time.monotonic() > deadline:
            proc.terminate()
            raise SystemExit(f"aocu serve: {what} did not start within {START_TIMEOUT_S:g} s")
        time.sleep(0.02)


def start_evaluator(config: NodeConfig, ours: Collection[int] = ()) -> subprocess.Popen:
    """Starts one evaluator (shard `config.shard`) and waits until it holds its lock and serves its socket;
    `ours`: the PIDs of this node's other running shards."""
    check_data_dir(config.data_dir, ours)
    proc = _spawn(config)
    _await(config, proc, ours)
    return proc


class Supervisor:
    """Keeps the node's evaluator processes (one per shard, `--evaluators`) running next to the gunicorn
    master; restarts each one on its own if it dies (its state is rebuilt from the store: checkpoints + log;
    the other shards keep serving meanwhile). Gives up, and stops the node, when another process has taken the
    data dir: `stop()` then raises DataDirInUse, so `aocu serve` exits with that one line."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.fatal: DataDirInUse | None = None
        self.configs = [shard_config(config, i) for i in range(config.evaluators)]
        self.procs: list[subprocess.Popen] = []
        try:
            # shard 0 first (its lock stands for the node), then the others start side by side
            self.procs.append(start_evaluator(self.configs[0]))
            ours = {self.procs[0].pid}
            rest = [_spawn(c) for c in self.configs[1:]]
            self.procs += rest
            ours |= {p.pid for p in rest}
            for c, p in zip(self.configs[1:], rest, strict=True):
                _await(c, p, ours)
        except BaseException:
            self._terminate(self.procs)
            raise
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="aocu-evaluator-supervisor", daemon=True)
        self._thread.start()

    @property
    def proc(self) -> subprocess.Popen:
        """Shard 0's process (the only one of a one-shard node)."""
        return self.procs[0]

    def _watch(self) -> None:
        backoff = [0.0] * len(self.procs)
        next_try = [0.0] * len(self.procs)
        while not self._stopping.wait(0.5):
            for i, proc in enumerate(self.procs):
                if self._stopping.is_set() or time.monotonic() < next_try[i]:
                    continue
                if proc.returncode is None:
                    status = exit_status(proc)
                    if status is None:
                        continue
                    what = "the evaluator" if len(self.procs) == 1 else f"evaluator shard {i}"
                    log.error("%s (PID %d) %s; restarting it", what, proc.pid, describe_exit(status))
                try:
                    ours = {p.pid for j, p in enumerate(self.procs) if j != i and p.returncode is None}
                    self.procs[i] = start_evaluator(self.configs[i], ours)
                    backoff[i] = 0.0
                except DataDirInUse as exc:
                    self._give_up(exc)
                    return
                except SystemExit as exc:
                    backoff[i] = min(MAX_BACKOFF_S, max(2.0, backoff[i] * 2))
                    next_try[i] = time.monotonic() + backoff[i]
                    log.error("%s (next attempt in %g s)", exc, backoff[i])

    def _give_up(self, exc: DataDirInUse) -> None:
        self.fatal = exc
        log.error("aocu serve: %s: not restarting the evaluator; stopping this node", exc)
        self._stopping.set()
        os.kill(os.getpid(), signal.SIGTERM)      # the gunicorn master stops its workers and returns

    @staticmethod
    def _terminate(procs: list[subprocess.Popen]) -> None:
        live = [p for p in procs if exit_status(p) is None]
        for p in live:
            p.send_signal(signal.SIGTERM)   # checkpoints warm processes on the way out
        deadline = time.monotonic() + 60
        for p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()

    def stop(self) -> None:
        self._stopping.set()
        self._terminate(self.procs)
        if self.fatal is not None:
            raise self.fatal
