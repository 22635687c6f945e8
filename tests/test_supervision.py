"""Supervision of the evaluator process (cu/serve/supervisor.py, cu/node/service.py): the log names the real
cause of an evaluator's exit even though the gunicorn master reaps every child, and an evaluator orphaned by a
killed master exits by itself, with status 0 and without a native abort, while an evaluation is in flight."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cu.serve import supervisor
from tests.test_node_e2e import Node, _children, request, send, spawn, upload_module

PR_SET_CHILD_SUBREAPER = 36


def _evaluator_of(master: int) -> int:
    found = [c for c in _children(master) if b"cu.node.service" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(found) == 1, found
    return found[0]


def test_status_kept_when_another_waitpid_reaps_it():
    # what the gunicorn arbiter does on SIGCHLD: waitpid(-1) (routed through supervisor.waitpid)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with supervisor._reap_lock:
        supervisor._watched.add(proc.pid)
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    try:
        assert supervisor.exit_status(proc) is None
        os.kill(proc.pid, signal.SIGKILL)
        other.wait()
        deadline = time.monotonic() + 10
        while supervisor.waitpid(-1, os.WNOHANG)[0] != proc.pid:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        status = supervisor.exit_status(proc)
        assert status is not None and supervisor.describe_exit(status) == "was killed by SIGKILL (out of memory?)"
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
    assert supervisor.describe_exit(3 << 8) == "exited with status 3"
    assert supervisor.describe_exit(signal.SIGSEGV) == "was killed by SIGSEGV"


@pytest.fixture(scope="module")
def lua32_wasm() -> bytes:
    from tests.modules.build import build
    return build("lua32").read_bytes()


def test_killed_evaluator_is_logged_with_its_signal(tmp_path, lua32_wasm):
    from cu.codec.wallet import ArweaveWallet
    node = Node(tmp_path / "data", workers=1)
    try:
        ev = _evaluator_of(node.proc.pid)
        os.kill(ev, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while "was killed by SIGKILL" not in node.logs():
            assert time.monotonic() < deadline, node.logs()
            time.sleep(0.1)
        assert "exited with status 0" not in node.logs()
        # and the restarted evaluator serves
        wallet = ArweaveWallet.generate()
        pid = spawn(node.url, wallet, upload_module(node.url, wallet, lua32_wasm))
        assert pid
    finally:
        node.stop_term()


@pytest.mark.slow
def test_orphaned_evaluator_exits_cleanly_while_evaluating(tmp_path, lua32_wasm):
    """kill -9 of the master while a runaway dry-run and a runaway message are evaluating: the evaluator notices
    within a second, and exits 0 within a few seconds (not after --eval-timeout), without `terminate called`."""
    from cu.codec.wallet import ArweaveWallet
    libc = ctypes.CDLL(None, use_errno=True)
    # orphans of this test become this process's children, so their exit status can be read
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    node = Node(tmp_path / "data", workers=1)
    try:
        wallet = ArweaveWallet.generate()
        pid = spawn(node.url, wallet, upload_module(node.url, wallet, lua32_wasm))
        body = json.dumps({"Tags": [{"name": "Action", "value": "Eval"}], "Data": "while true do end"}).encode()
        threading.Thread(target=request, args=("POST", f"{node.url}/dry-run?process-id={pid}", body,
                                                {"Content-Type": "application/json"}, 40), daemon=True).start()
        send(node.url, wallet, pid, "Eval", "while true do end")
        time.sleep(1.0)              # both evaluations are running in native code now
        ev = _evaluator_of(node.proc.pid)
        workers = [c for c in _children(node.proc.pid) if c != ev]
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait(timeout=10)
        t0 = time.monotonic()
        status = None
        while time.monotonic() - t0 < 15:
            wpid, st = os.waitpid(ev, os.WNOHANG)
            if wpid:
                status = st
                break
            time.sleep(0.05)
        took = time.monotonic() - t0
        assert status is not None, f"the orphaned evaluator still runs after 15 s:\n{node.logs()}"
        for w in workers:        # the orphaned gunicorn workers stop by themselves too
            try:
                os.waitpid(w, 0)
            except ChildProcessError:
                pass
        logs = node.logs()
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (supervisor.describe_exit(status), logs)
        assert took < 6, took
        assert "terminate called" not in logs and "parent exited" in logs, logs
    finally:
        try:
            os.killpg(node.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        while True:                  # reap whatever else was reparented here
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        node.log.close()
