"""Slow builds the suite needs (the image payloads, the AmdSev firmware) start in the background as soon as
collection shows that a selected test needs them, and run while the other tests do; the fixture that needs a
build waits for it. On a 2-core CI machine most of the suite waits on sockets and child processes, so the
builds' CPU fits in between: this is what keeps `.ci/run` under its time limit without skipping them.

Each job's output goes to a log file; `wait()` returns the exit code, the log and the timings, and the
fixture prints them (what ran, how long, how long the test waited), so the CI log shows where time went.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Job:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None


@dataclass(frozen=True)
class Outcome:
    returncode: int
    log: str
    build_s: float      # how long the job ran
    waited_s: float     # how long the caller blocked for it

    def summary(self, name: str) -> str:
        return f"[background {name}] exit {self.returncode}, ran {self.build_s:.0f}s, test waited {self.waited_s:.0f}s"


_JOBS: dict[str, Job] = {}


def start(name: str, argv: list[str], *, env: dict[str, str], log: Path, cwd: Path | None = None) -> None:
    """Start `argv` once under `name` (a second start of the same name does nothing)."""
    if name in _JOBS:
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        # nice: the tests in the foreground measure latencies and timeouts; the build only needs to finish
        proc = subprocess.Popen(["nice", "-n", "10", *argv], env=env, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    job = _JOBS[name] = Job(name, argv, log, proc)

    def watch() -> None:       # the job's own end time, not when a test came to wait for it
        proc.wait()
        job.ended = time.monotonic()

    threading.Thread(target=watch, name=f"background-{name}", daemon=True).start()


def started(name: str) -> bool:
    return name in _JOBS


def wait(name: str, timeout: float) -> Outcome:
    job = _JOBS[name]
    t0 = time.monotonic()
    try:
        rc = job.proc.wait(timeout=max(1.0, timeout - (t0 - job.started)))
    except subprocess.TimeoutExpired:
        _kill(job)
        rc = -signal.SIGKILL
    ended = job.ended if job.ended is not None else time.monotonic()
    return Outcome(rc, job.log.read_text(errors="replace"), ended - job.started, time.monotonic() - t0)


def _kill(job: Job) -> None:
    try:
        os.killpg(job.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    job.proc.wait()


def stop_all() -> None:
    """End of session: a job no test waited for (a deselected or failed test) must not outlive pytest."""
    for job in _JOBS.values():
        if job.proc.poll() is None:
            _kill(job)
