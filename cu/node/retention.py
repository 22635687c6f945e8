"""Retention (`--retain-results N`, `--retain-checkpoints N`): a background pass in the evaluator process removes
the result bodies of each process older than its latest N results, and checkpoints beyond the latest N. The
message log (items, assignments, the hash chain) always stays, so every process can still be evaluated again
from the start.

A pruned result is gone for good: the store records per process up to which seq (and message nonce) results
were removed (table `pruned`), so a read of one answers `Gone` (410) instead of evaluating, and a result
recomputed after a restart (from a checkpoint older than the pruned range) is neither stored again nor has its
outbox delivered twice. Each pass is bounded (`ROWS_PER_PASS` rows, in transactions of at most `ROWS_PER_JOB`
rows through the store's group writer) and resumes where the previous one stopped."""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cu.node.store_sqlite import Job, SqliteStore

log = logging.getLogger("aocu.evaluator")

ROWS_PER_PASS = 20_000     # result rows removed by one pass at most
ROWS_PER_JOB = 2_000       # per transaction: the group writer's other writes wait at most this long
PIDS_PER_PAGE = 200


def prune_results_job(pid: str, keep: int, limit: int) -> Job:
    """A store job removing up to `limit` of `pid`'s oldest results beyond its latest `keep`; returns how many."""
    def job(c: sqlite3.Connection) -> int:
        top, low = c.execute("SELECT max(seq), min(seq) FROM results WHERE pid=?", (pid,)).fetchone()
        if top is None or low > top - keep:
            return 0
        hi = min(top - keep, low + limit - 1)
        (nonce,) = c.execute("SELECT max(nonce) FROM results WHERE pid=? AND seq BETWEEN ? AND ?",
                             (pid, low, hi)).fetchone()
        n = c.execute("DELETE FROM results WHERE pid=? AND seq BETWEEN ? AND ?", (pid, low, hi)).rowcount
        c.execute("INSERT INTO pruned VALUES (?,?,?) ON CONFLICT (pid) DO UPDATE SET seq=max(seq, excluded.seq), "
                  "nonce=max(nonce, excluded.nonce)", (pid, hi, nonce))
        return n
    return job


def prune_checkpoints_job(pid: str, keep: int) -> Job:
    def job(c: sqlite3.Connection) -> int:
        return c.execute("DELETE FROM checkpoints WHERE pid=? AND seq NOT IN (SELECT seq FROM checkpoints WHERE "
                         "pid=? ORDER BY seq DESC LIMIT ?)", (pid, pid, keep)).rowcount
    return job


class Pruner:
    """The background retention pass of one store; `metrics` gets `pruned_results` / `pruned_checkpoints`."""

    def __init__(self, store: SqliteStore, *, retain_results: int, retain_checkpoints: int, every_s: float,
                 metrics: dict[str, float]) -> None:
        self.store = store
        self.retain_results = retain_results
        self.retain_checkpoints = retain_checkpoints
        self.every_s = every_s
        self.metrics = metrics
        self.metrics.setdefault("pruned_results", 0)
        self.metrics.setdefault("pruned_checkpoints", 0)
        self._after = ""            # the pass resumes after this pid
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="aocu-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.run_pass()
            except Exception as exc:  # noqa: BLE001 - retention must not stop; the next pass tries again
                log.error("retention pass failed: %s", exc)

    def _write(self, job: Job) -> int:
        """Through the store's writer (the evaluator's group committer): in order with every other write."""
        (res,) = self.store.writer([job], False)
        if isinstance(res, Exception):
            raise res
        return int(res)

    def run_pass(self) -> int:
        """One bounded pass over processes (resuming after the last one seen); returns rows removed."""
        budget = ROWS_PER_PASS
        removed = 0
        while budget > 0 and not self._stop.is_set():
            pids = self.store.process_ids(after=self._after, limit=PIDS_PER_PAGE)
            if not pids:
                self._after = ""        # wrapped around: the next pass starts from the first process
                break
            for pid in pids:
                self._after = pid
                n = 0
                if self.retain_results:
                    while budget > 0:
                        k = self._write(prune_results_job(pid, self.retain_results, min(budget, ROWS_PER_JOB)))
                        n += k
                        budget -= k
                        if k < ROWS_PER_JOB:
                            break
                    self.metrics["pruned_results"] += n
                c = self._write(prune_checkpoints_job(pid, self.retain_checkpoints))
                self.metrics["pruned_checkpoints"] += c
                removed += n + c
                if budget <= 0:
                    break
        return removed
