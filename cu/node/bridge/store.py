"""The bridge's own SQLite database (`<data-dir>/bridge.sqlite`): remote process metadata, module bytes, results,
dedup keys, progress and engine snapshots. Snapshots live in the database, not in files, so an interrupted
evaluation can never leave an orphaned state file behind (permaweb/ao#1013)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from cu.node.bridge.checkpoint import open_snapshot, seal_snapshot
from cu.node.bridge.remote import Progress
from cu.node.fsmodes import private_db
from cu.node.store import ResultRow, results_page_query

SCHEMA = """
CREATE TABLE IF NOT EXISTS processes (pid TEXT PRIMARY KEY, meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS modules (id TEXT PRIMARY KEY, wasm BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS progress (pid TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (pid TEXT NOT NULL, seq INTEGER NOT NULL, nonce INTEGER NOT NULL, cron TEXT,
    message_id TEXT, timestamp INTEGER NOT NULL, block_height INTEGER NOT NULL, error INTEGER NOT NULL,
    body BLOB NOT NULL, PRIMARY KEY (pid, seq));
CREATE INDEX IF NOT EXISTS results_msg ON results (pid, message_id);
CREATE INDEX IF NOT EXISTS results_ts ON results (pid, timestamp, seq);
CREATE TABLE IF NOT EXISTS dedup (pid TEXT NOT NULL, key TEXT NOT NULL, nonce INTEGER NOT NULL,
    PRIMARY KEY (pid, key));
CREATE TABLE IF NOT EXISTS skipped (pid TEXT NOT NULL, message_id TEXT NOT NULL, nonce INTEGER NOT NULL,
    key TEXT NOT NULL, PRIMARY KEY (pid, nonce));
CREATE TABLE IF NOT EXISTS snapshots (pid TEXT PRIMARY KEY, state TEXT NOT NULL, blob BLOB NOT NULL);
"""


def _row(r: tuple) -> ResultRow:
    return ResultRow(pid=r[0], seq=r[1], nonce=r[2], cron=r[3], message_id=r[4], timestamp=r[5], block_height=r[6],
                     error=bool(r[7]), body=bytes(r[8]))


class BridgeStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        private_db(self.path)  # 0600 whatever the umask (docs/SEALING.md)
        self._lock = threading.RLock()
        self._c = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._c.execute("PRAGMA journal_mode=WAL")
        self._c.execute("PRAGMA synchronous=NORMAL")
        self._c.execute("PRAGMA busy_timeout=30000")
        self._c.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Version 1: every evaluated message is a dedup key (its deep hash, else its id, so a later pure
        assignment of it is skipped). Stores written before recorded plain messages under no key: their evaluated
        scheduled entries without a key at their nonce get their id key now."""
        if self._c.execute("PRAGMA user_version").fetchone()[0] >= 1:
            return
        self._c.execute("BEGIN IMMEDIATE")
        try:
            self._c.execute(
                "INSERT OR IGNORE INTO dedup SELECT r.pid, 'assignment:' || r.message_id, r.nonce FROM results r "
                "WHERE r.cron IS NULL AND r.message_id IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM dedup d WHERE d.pid = r.pid AND d.nonce = r.nonce)")
            self._c.execute("PRAGMA user_version = 1")
            self._c.execute("COMMIT")
        except BaseException:
            self._c.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._c.close()

    def _q(self, sql: str, args: Iterable[object] = ()) -> list[tuple]:
        with self._lock:
            return self._c.execute(sql, tuple(args)).fetchall()

    # metadata ------------------------------------------------------------------------------------------
    def process_meta(self, pid: str) -> str | None:
        rows = self._q("SELECT meta FROM processes WHERE pid=?", (pid,))
        return rows[0][0] if rows else None

    def put_process_meta(self, pid: str, meta: str) -> None:
        self._q("INSERT OR REPLACE INTO processes VALUES (?,?)", (pid, meta))

    def module(self, module_id: str) -> bytes | None:
        rows = self._q("SELECT wasm FROM modules WHERE id=?", (module_id,))
        return bytes(rows[0][0]) if rows else None

    def put_module(self, module_id: str, wasm: bytes) -> None:
        self._q("INSERT OR IGNORE INTO modules VALUES (?,?)", (module_id, wasm))

    # progress, results, dedup (committed together) -------------------------------------------------------
    def progress(self, pid: str) -> Progress | None:
        rows = self._q("SELECT state FROM progress WHERE pid=?", (pid,))
        return Progress.from_json(rows[0][0]) if rows else None

    def commit(self, pid: str, progress: Progress, rows: list[ResultRow], keys: dict[str, int],
               skipped: list[tuple[str, int, str]]) -> list[int]:
        """One transaction; returns the seqs whose recomputed body differs from the stored one (must be empty)."""
        mismatched: list[int] = []
        with self._lock:
            c = self._c
            c.execute("BEGIN IMMEDIATE")
            try:
                for r in rows:
                    old = c.execute("SELECT body FROM results WHERE pid=? AND seq=?", (pid, r.seq)).fetchone()
                    if old is not None:
                        if bytes(old[0]) != r.body:
                            mismatched.append(r.seq)
                        continue
                    c.execute("INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?)",
                              (pid, r.seq, r.nonce, r.cron, r.message_id, r.timestamp, r.block_height,
                               int(r.error), r.body))
                for key, nonce in keys.items():
                    c.execute("INSERT OR IGNORE INTO dedup VALUES (?,?,?)", (pid, key, nonce))
                for mid, nonce, key in skipped:
                    c.execute("INSERT OR IGNORE INTO skipped VALUES (?,?,?,?)", (pid, mid, nonce, key))
                c.execute("INSERT OR REPLACE INTO progress VALUES (?,?)", (pid, progress.to_json()))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return mismatched

    def dedup_nonce(self, pid: str, key: str) -> int | None:
        rows = self._q("SELECT nonce FROM dedup WHERE pid=? AND key=?", (pid, key))
        return rows[0][0] if rows else None

    def skipped(self, pid: str, message_id: str) -> tuple[int, str] | None:
        rows = self._q("SELECT nonce, key FROM skipped WHERE pid=? AND message_id=? ORDER BY nonce", (pid, message_id))
        return (rows[0][0], rows[0][1]) if rows else None

    # snapshots -----------------------------------------------------------------------------------------
    def snapshot(self, pid: str) -> tuple[Progress, bytes] | None:
        rows = self._q("SELECT state, blob FROM snapshots WHERE pid=?", (pid,))
        # authenticated with the node's cache key (an altered snapshot reads as none: docs/SEALING.md)
        blob = open_snapshot(self.path.parent, pid, rows[0][0], bytes(rows[0][1])) if rows else None
        return (Progress.from_json(rows[0][0]), blob) if blob is not None else None

    def put_snapshot(self, pid: str, progress: Progress, blob: bytes) -> None:
        state = progress.to_json()
        self._q("INSERT OR REPLACE INTO snapshots VALUES (?,?,?)",
                (pid, state, seal_snapshot(self.path.parent, pid, state, blob)))

    # reads ---------------------------------------------------------------------------------------------
    def result_by_message(self, pid: str, message_id: str) -> ResultRow | None:
        rows = self._q("SELECT * FROM results WHERE pid=? AND message_id=? AND cron IS NULL ORDER BY seq LIMIT 1",
                       (pid, message_id))
        return _row(rows[0]) if rows else None

    def result_by_nonce(self, pid: str, nonce: int) -> ResultRow | None:
        """The result of the scheduled message (or pure assignment) at `nonce` (not a cron after it)."""
        rows = self._q("SELECT * FROM results WHERE pid=? AND nonce=? AND cron IS NULL ORDER BY seq LIMIT 1",
                       (pid, nonce))
        return _row(rows[0]) if rows else None

    def skipped_at(self, pid: str, nonce: int) -> tuple[int, str] | None:
        rows = self._q("SELECT nonce, key FROM skipped WHERE pid=? AND nonce=?", (pid, nonce))
        return (rows[0][0], rows[0][1]) if rows else None

    def first_result_nonce(self, pid: str) -> int | None:
        rows = self._q("SELECT MIN(nonce) FROM results WHERE pid=? AND cron IS NULL", (pid,))
        return rows[0][0] if rows else None

    def result_by_seq(self, pid: str, seq: int) -> ResultRow | None:
        rows = self._q("SELECT * FROM results WHERE pid=? AND seq=?", (pid, seq))
        return _row(rows[0]) if rows else None

    def results(self, pid: str) -> list[ResultRow]:
        return [_row(r) for r in self._q("SELECT * FROM results WHERE pid=? ORDER BY seq", (pid,))]

    def results_page(self, pid: str, *, after: tuple[int, int] | None, until: tuple[int, int] | None,
                     descending: bool, limit: int, crons_only: bool,
                     skip_errors: bool) -> tuple[list[ResultRow], bool]:
        """Same contract as `cu.node.store.Store.results_page`."""
        q, args = results_page_query(pid, after=after, until=until, descending=descending, limit=limit,
                                     crons_only=crons_only, skip_errors=skip_errors)
        rows = [_row(r) for r in self._q(q, args)]
        return rows[:limit], len(rows) > limit

    def seq_for(self, pid: str, timestamp: int, nonce: int, cron: str | None) -> int | None:
        if cron is None:
            rows = self._q("SELECT seq FROM results WHERE pid=? AND timestamp=? AND nonce=? AND cron IS NULL",
                           (pid, timestamp, nonce))
        else:
            rows = self._q("SELECT seq FROM results WHERE pid=? AND timestamp=? AND nonce=? AND cron=?",
                           (pid, timestamp, nonce, cron))
        return rows[0][0] if rows else None

    # status (the status page and GET /processes) ------------------------------------------------------------
    def processes_page(self, before: tuple[int, str] | None, limit: int) -> list[tuple[str, str, str | None]]:
        """(pid, meta, progress JSON) of remote processes, by the time of their last evaluated entry, newest
        first, after the exclusive bound `before` = (last_ts, pid); `limit` + 1 rows at most (is there more?)."""
        ts = "coalesce(json_extract(g.state, '$.last_ts'), 0)"
        q = "SELECT p.pid, p.meta, g.state FROM processes p LEFT JOIN progress g ON g.pid = p.pid"
        args: list[object] = []
        if before is not None:
            q += f" WHERE ({ts}, p.pid) < (?, ?)"
            args += list(before)
        return self._q(q + f" ORDER BY {ts} DESC, p.pid DESC LIMIT ?", [*args, limit + 1])

    def process_count(self) -> int:
        return self._q("SELECT count(*) FROM processes")[0][0]
