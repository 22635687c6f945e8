"""Supervision of the evaluator process next to the gunicorn master: started before the workers, restarted when
it dies (its state is rebuilt from the store: checkpoints + log), stopped with SIGTERM so it checkpoints.

One evaluator per data dir: the evaluator holds an exclusive flock on DATA-DIR/evaluator.lock and writes its
PID into it (cu/node/service.py `acquire_lock`). A node whose data dir is held by another process stops at once
with `data dir D is in use by PID N`, and a running node whose evaluator cannot restart because another node
took the data dir gives up (and shuts down) instead of restarting it forever.

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
from pathlib import Path
from typing import Any

import cu
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


def lock_holder(data_dir: Path) -> int | None:
    """Who holds DATA-DIR/evaluator.lock: its PID, 0 when held by a process that cannot be named, None when
    free (or absent). Probes with a non-blocking flock that is released at once."""
    path = Path(data_dir) / LOCK_FILE
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


def check_data_dir(data_dir: Path) -> None:
    """Raises DataDirInUse when another process holds the data dir's evaluator lock."""
    holder = lock_holder(data_dir)
    if holder is not None:
        raise DataDirInUse(Path(data_dir), holder)


def start_evaluator(config: NodeConfig) -> subprocess.Popen:
    """Starts the evaluator process and waits until it holds the data dir's lock and serves its socket."""
    check_data_dir(config.data_dir)
    env = dict(os.environ)
    # The evaluator imports the same `cu` as this process: its package root via PYTHONPATH, and -P so that
    # the working directory (e.g. a source checkout without the built extension) is not put first on sys.path.
    env["PYTHONPATH"] = os.pathsep.join([str(Path(cu.__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    with _reap_lock:     # registered before anyone can reap it
        proc = subprocess.Popen([sys.executable, "-P", "-m", "cu.node.service", json.dumps(config.to_mapping()),
                                 str(os.getpid())], env=env)
        _watched.add(proc.pid)
    deadline = time.monotonic() + START_TIMEOUT_S
    assert config.socket_path is not None
    lock = config.data_dir / LOCK_FILE
    # ready = this child holds the lock (its PID is in the lock file) and its socket answers; a socket alone
    # could be another node's evaluator on the same data dir
    while not (_pid_in_file(lock) == proc.pid and _listening(config.socket_path)):
        status = exit_status(proc)
        if status is not None:
            check_data_dir(config.data_dir)     # lost the lock to another node in between
            raise SystemExit(f"aocu serve: the evaluator {describe_exit(status)}")
        if time.monotonic() > deadline:
            proc.terminate()
            raise SystemExit(f"aocu serve: the evaluator did not start within {START_TIMEOUT_S:g} s")
        time.sleep(0.02)
    return proc


class Supervisor:
    """Keeps the evaluator process running next to the gunicorn master; restarts it if it dies (its state
    is rebuilt from the store: checkpoints + log). Gives up, and stops the node, when another process has
    taken the data dir: `stop()` then raises DataDirInUse, so `aocu serve` exits with that one line."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.fatal: DataDirInUse | None = None
        self.proc = start_evaluator(config)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="aocu-evaluator-supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        backoff = 0.0
        while not self._stopping.wait(0.5 + backoff):
            status = exit_status(self.proc)
            if status is None or self._stopping.is_set():
                continue
            log.error("the evaluator (PID %d) %s; restarting it", self.proc.pid, describe_exit(status))
            try:
                self.proc = start_evaluator(self.config)
                backoff = 0.0
            except DataDirInUse as exc:
                self._give_up(exc)
                return
            except SystemExit as exc:
                backoff = min(MAX_BACKOFF_S, max(2.0, backoff * 2))
                log.error("%s (next attempt in %g s)", exc, backoff)

    def _give_up(self, exc: DataDirInUse) -> None:
        self.fatal = exc
        log.error("aocu serve: %s: not restarting the evaluator; stopping this node", exc)
        self._stopping.set()
        os.kill(os.getpid(), signal.SIGTERM)      # the gunicorn master stops its workers and returns

    def stop(self) -> None:
        self._stopping.set()
        proc = self.proc
        if exit_status(proc) is None:
            proc.send_signal(signal.SIGTERM)   # checkpoints warm processes on the way out
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.fatal is not None:
            raise self.fatal
