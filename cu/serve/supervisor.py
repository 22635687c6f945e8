"""Supervision of the evaluator process next to the gunicorn master: started before the workers, restarted when
it dies (its state is rebuilt from the store: checkpoints + log), stopped with SIGTERM so it checkpoints."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cu
from cu.node.config import NodeConfig

log = logging.getLogger("aocu.serve")


def _listening(path: Path) -> bool:
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False    # absent, or a stale file left by an evaluator that died


def start_evaluator(config: NodeConfig) -> subprocess.Popen:
    env = dict(os.environ)
    # The evaluator imports the same `cu` as this process: its package root via PYTHONPATH, and -P so that
    # the working directory (e.g. a source checkout without the built extension) is not put first on sys.path.
    env["PYTHONPATH"] = os.pathsep.join([str(Path(cu.__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-P", "-m", "cu.node.service", json.dumps(config.to_mapping()),
                             str(os.getpid())], env=env)
    deadline = time.monotonic() + 30
    assert config.socket_path is not None
    while not _listening(config.socket_path):
        if proc.poll() is not None:
            raise SystemExit(f"aocu serve: the evaluator exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            proc.terminate()
            raise SystemExit("aocu serve: the evaluator did not start within 30 s")
        time.sleep(0.02)
    return proc


class Supervisor:
    """Keeps the evaluator process running next to the gunicorn master; restarts it if it dies (its state
    is rebuilt from the store: checkpoints + log)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.proc = start_evaluator(config)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="aocu-evaluator-supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            if self.proc.poll() is not None and not self._stopping.is_set():
                log.error("the evaluator exited with status %s; restarting it", self.proc.returncode)
                try:
                    self.proc = start_evaluator(self.config)
                except SystemExit as exc:
                    log.error("%s", exc)
                    time.sleep(2)

    def stop(self) -> None:
        self._stopping.set()
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)   # checkpoints warm processes on the way out
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
