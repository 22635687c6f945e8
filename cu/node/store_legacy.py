"""Reads of the SQLite store that only the legacy CU semantics need: a log entry by its assignment id (`/result`
of a pure assignment) and the positions for a read at a point in time (`/state?to=`, `/dry-run?to=`). Kept out of
store_sqlite.py (at its size limit); same tables, read-only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cu.node.store import Checkpoint, LogEntry

if TYPE_CHECKING:
    from cu.node.store_sqlite import SqliteStore

_INT64 = 1 << 63


def log_entry_by_assignment(store: SqliteStore, pid: str, assignment_id: str) -> LogEntry | None:
    row = store._conn().execute("SELECT * FROM log WHERE pid=? AND assignment_id=?",
                                (pid, assignment_id)).fetchone()
    return LogEntry(*row) if row else None


def last_log_entry_at(store: SqliteStore, pid: str, timestamp: int) -> LogEntry | None:
    """The newest scheduled entry with a timestamp at or before `timestamp` (timestamps never decrease with the
    nonce)."""
    if not -_INT64 <= timestamp < _INT64:
        return None
    row = store._conn().execute("SELECT * FROM log WHERE pid=? AND timestamp<=? ORDER BY nonce DESC LIMIT 1",
                                (pid, timestamp)).fetchone()
    return LogEntry(*row) if row else None


def checkpoints_of(store: SqliteStore, pid: str) -> list[Checkpoint]:
    """The process's stored checkpoints, newest first."""
    rows = store._conn().execute("SELECT * FROM checkpoints WHERE pid=? ORDER BY seq DESC", (pid,)).fetchall()
    return [Checkpoint(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]), bytes(r[7])) for r in rows]
