"""Cron monitors (legacy MU `POST /monitor/{pid}`, `DELETE /monitor/{pid}`): processes whose crons run, and whose
outbox is delivered, without anyone reading them.

The legacy CU evaluates crons only when a process is read and the legacy MU's monitor polled `/cron` from memory
(lost on restart, permaweb/ao#651, #774). Here a background ticker in the evaluator evaluates each monitored
process up to now (crons included; its outbox goes out as for any evaluation) every `every_s`. It is bounded: at
most `max_monitors` processes, at most `per_pass` of them per pass (round robin, so every one gets its turn),
and restart-safe: the set is written to `DATA-DIR/monitors.json` (atomically) on every change and read at start.
Counters in the evaluator metrics: `monitors` (gauge), `monitor_passes`, `monitor_runs`, `monitor_failures`."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from cu.node.errors import CoreError, LimitExceeded

log = logging.getLogger("aocu.monitors")


class CronMonitors:
    def __init__(self, data_dir: str | Path, run: Callable[[str], None], metrics: dict[str, float], *,
                 max_monitors: int = 1000, per_pass: int = 64, every_s: float = 5.0,
                 owns: Callable[[str], bool] | None = None) -> None:
        self.path = Path(data_dir) / "monitors.json"
        # evaluator shards (cu/node/shards.py) share the file; each runs (and keeps in memory) the processes it owns
        self.owns: Callable[[str], bool] = owns or (lambda pid: True)
        self.run = run                   # evaluates one process up to now (crons, outbox)
        self.metrics = metrics
        self.max_monitors = max_monitors
        self.per_pass = per_pass
        self.every_s = every_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._next = 0                   # round-robin position
        self._pids: list[str] = self._load()
        self.metrics.update({"monitors": float(len(self._pids)), "monitor_passes": 0, "monitor_runs": 0,
                             "monitor_failures": 0})

    def _load(self) -> list[str]:
        try:
            pids = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.error("cron monitors in %s unreadable (%s); starting with none", self.path, exc)
            return []
        if not isinstance(pids, list):
            return []
        return [p for p in pids if isinstance(p, str) and self.owns(p)][: self.max_monitors]

    def _others(self) -> list[str]:
        """The processes other evaluator shards monitor, as the shared file names them."""
        try:
            on_disk = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        return [p for p in on_disk if isinstance(p, str) and not self.owns(p)] if isinstance(on_disk, list) else []

    def _save(self) -> None:
        """Writes this shard's processes into the shared file, keeping the other shards' (under a lock file)."""
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self._others() + self._pids))
            os.replace(tmp, self.path)
        self.metrics["monitors"] = float(len(self._pids))

    def pids(self) -> list[str]:
        with self._lock:
            return list(self._pids)

    def add(self, pid: str) -> bool:
        """Monitors `pid`; False when it was monitored already."""
        with self._lock:
            if pid in self._pids:
                return False
            if len(self._pids) + len(self._others()) >= self.max_monitors:     # node-wide, every shard's
                raise LimitExceeded(f"{self.max_monitors} processes are monitored already (the maximum): stop "
                                    f"monitoring one first")
            self._pids.append(pid)
            self._save()
        self._wake.set()                 # its crons due so far run at once
        return True

    def remove(self, pid: str) -> bool:
        with self._lock:
            if pid not in self._pids:
                return False
            self._pids.remove(pid)
            self._save()
            return True

    # the ticker -------------------------------------------------------------------------------------------
    def run_pass(self) -> int:
        """Evaluates up to `per_pass` monitored processes (round robin); returns how many ran."""
        with self._lock:
            n = len(self._pids)
            if not n:
                return 0
            start = self._next % n
            batch = [self._pids[(start + i) % n] for i in range(min(self.per_pass, n))]
            self._next = (start + len(batch)) % n
        self.metrics["monitor_passes"] += 1
        for pid in batch:
            if self._stop.is_set():
                break
            try:
                self.run(pid)
                self.metrics["monitor_runs"] += 1
            except CoreError as exc:
                self.metrics["monitor_failures"] += 1
                log.warning("cron monitor of %s: %s", pid, exc.message)
            except Exception as exc:  # noqa: BLE001 - one process failing must not stop the others' crons
                self.metrics["monitor_failures"] += 1
                log.error("cron monitor of %s failed: %s", pid, exc)
        return len(batch)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_pass()
            self._wake.wait(self.every_s)
            self._wake.clear()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="aocu-cron-monitors", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
