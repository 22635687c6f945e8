"""Processes whose instance cannot be built (`FailedProcesses`): a module whose start function, constructors or
`main` trap or run past the wall-clock limit (`NodeConfig.eval_timeout_s`), or whose imports/exports the engine
refuses at instantiation. Such a process is marked failed with the reason, in memory and in
`<data_dir>/failed-processes.json`, so neither the crank nor a restart tries it again in a loop: every request
for it answers `Invalid` at once. A process that failed by running out of time is tried again (once) when the
node runs with a longer evaluation timeout than the one it failed under; deleting the file retries them all."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cu.node.errors import Invalid

log = logging.getLogger("aocu.evaluator")

FILE = "failed-processes.json"
TIMEOUT_MARK = "wall-clock limit exceeded"     # the engine's reason when the deadline interrupted the module


def cannot_instantiate(pid: str, reason: str) -> Invalid:
    return Invalid(f"process {pid} cannot be instantiated: {reason}")


class FailedProcesses:
    def __init__(self, data_dir: str | Path | None) -> None:
        self.path = Path(data_dir) / FILE if data_dir is not None else None
        self._lock = threading.Lock()
        self._failed: dict[str, dict[str, Any]] = self._read(warn=True)

    def _read(self, *, warn: bool = False) -> dict[str, dict[str, Any]]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            if warn:
                log.warning("%s unreadable (%s); no process is marked failed", self.path, exc)
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict) and "reason" in v} if isinstance(data, dict) \
            else {}

    def __len__(self) -> int:
        return len(self._failed)

    def reason(self, pid: str) -> str | None:
        with self._lock:
            rec = self._failed.get(pid)
        return None if rec is None else str(rec["reason"])

    def check(self, pid: str, timeout_s: float | None) -> None:
        """Invalid when `pid` is marked failed (and a longer timeout than the one it timed out under does not
        give it another try)."""
        with self._lock:
            rec = self._failed.get(pid)
        if rec is None:
            return
        before = rec.get("timeout_s")
        if rec.get("timed_out") and isinstance(before, int | float) and (timeout_s is None or timeout_s > before):
            return          # tried again under the longer limit; marked again if it still does not finish
        raise cannot_instantiate(pid, str(rec["reason"]))

    def mark(self, pid: str, module_id: str, reason: str, timeout_s: float | None) -> Invalid:
        """Records the failure (memory and file) and returns the error every request for `pid` answers."""
        rec = {"reason": reason, "module": module_id, "timeout_s": timeout_s, "timed_out": TIMEOUT_MARK in reason,
               "at": int(time.time() * 1000)}
        with self._lock:
            self._failed[pid] = rec
            # evaluator shards (cu/node/shards.py) share the file: keep what the others marked
            snapshot = {**self._read(), **self._failed}
            if self.path is not None:
                try:
                    self._write(snapshot)
                except OSError as exc:
                    log.error("cannot record failed process %s in %s: %s", pid, self.path, exc)
        log.error("process %s cannot be instantiated (marked failed): %s", pid, reason)
        return cannot_instantiate(pid, reason)

    def _write(self, data: dict[str, dict[str, Any]]) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-failed-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
