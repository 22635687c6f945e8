"""The outbox deliverer's side of the SQLite store (cu/node/exchange): due entries, delivery outcomes, local
scheduling of entries whose target is here now, and bridged processes' outboxes. A mixin of `SqliteStore`
(store_sqlite.py), which provides the connection, the writer and the scheduling primitives used here."""

from __future__ import annotations

import sqlite3
from typing import Any

from cu.node.store import AssignmentBuilder, LogEntry, OutboxEntry, Outgoing, StoreError

_OUTBOX_SELECT = ("SELECT pid, seq, idx, kind, target, item_id, state, remote, attempts, next_at, reason, updated, "
                  "created FROM outbox")


class OutboxStoreMixin:
    _conn: Any
    _write: Any
    _META: str
    _meta: Any
    _spawn: Any
    _schedule: Any
    _put_outgoing: Any

    # the outbox deliverer (cu/node/exchange) ----------------------------------------------------------
    def outbox_entries(self, pid: str, seq: int | None = None) -> list[OutboxEntry]:
        """A process's outbox, or only what its result `seq` produced."""
        where, args = (" WHERE pid=?", (pid,)) if seq is None else (" WHERE pid=? AND seq=?", (pid, seq))
        return [OutboxEntry(*r) for r in self._conn().execute(
            _OUTBOX_SELECT + where + " ORDER BY seq, idx", args).fetchall()]

    def outbox_due(self, now_ms: int, limit: int = 64) -> list[OutboxEntry]:
        """Pending entries due by `now_ms`, each the first pending one of its (sender, target) pair, so one
        process's messages to another are delivered in outbox order."""
        return [OutboxEntry(*r) for r in self._conn().execute(
            _OUTBOX_SELECT + " AS o WHERE state='pending' AND next_at<=? AND NOT EXISTS (SELECT 1 FROM outbox p "
            "WHERE p.pid=o.pid AND p.target=o.target AND p.state='pending' AND (p.seq, p.idx) < (o.seq, o.idx)) "
            "ORDER BY next_at, pid, seq, idx LIMIT ?", (now_ms, limit)).fetchall()]

    def outbox_next_due(self) -> int | None:
        """ms when the earliest pending entry is due, None without pending entries."""
        return self._conn().execute("SELECT min(next_at) FROM outbox WHERE state='pending'").fetchone()[0]

    def outbox_counts(self) -> dict[str, int]:
        return dict(self._conn().execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())

    def outbox_oldest_pending(self) -> int | None:
        """ms when the oldest pending entry was created."""
        return self._conn().execute("SELECT min(created) FROM outbox WHERE state='pending'").fetchone()[0]

    def outbox_update(self, key: tuple[str, int, int], *, state: str, attempts: int, next_at: int,
                      remote: str | None, reason: str | None, now_ms: int) -> None:
        """One delivery attempt's outcome. Not durable: a `delivered` lost in a crash is pushed again, and
        the remote scheduler's deduplication by message id absorbs the repeat."""
        def job(c: sqlite3.Connection) -> None:
            c.execute("UPDATE outbox SET state=?, delivered=?, attempts=?, next_at=?, remote=?, reason=?, "
                      "updated=? WHERE pid=? AND seq=? AND idx=?",
                      (state, int(state in ("local", "delivered")), attempts, next_at, remote, reason, now_ms, *key))
        self._write(job, False)

    def outbox_schedule_local(self, e: OutboxEntry, now_ms: int, block_height: int,
                              build: AssignmentBuilder) -> tuple[LogEntry, bool]:
        """A pending entry whose target is on this node now: scheduled here and marked delivered in one
        transaction (durable); StoreError when it cannot be (the spawn's module is not here)."""
        def job(c: sqlite3.Connection) -> tuple[LogEntry, bool]:
            if e.kind == "Spawn":
                got = c.execute(self._META + ", raw FROM items WHERE id=?", (e.item_id,)).fetchone()
                meta = self._meta(got[:11]) if got else None
                module = next((v for n, v in meta.tags if n == "Module"), "") if meta else ""
                if meta is None or not c.execute("SELECT 1 FROM items WHERE id=? AND kind='Module'",
                                                 (module,)).fetchone():
                    raise StoreError(f"module {module or '(none)'} of the spawn is not on this node")
                fresh = c.execute("SELECT 1 FROM processes WHERE id=?", (e.target,)).fetchone() is None
                res = (self._spawn(c, meta, bytes(got[11]), module, now_ms, block_height, build,
                                   any(n == "Cron-Interval" for n, _ in meta.tags)), fresh)
            else:
                res = self._schedule(c, e.target, e.item_id, now_ms, block_height, build, None)
            c.execute("UPDATE outbox SET state='delivered', delivered=1, attempts=attempts+1, remote=?, reason=NULL, "
                      "updated=? WHERE pid=? AND seq=? AND idx=?", (f"local slot {res[0].nonce}", now_ms, *e.key))
            return res
        return self._write(job, True)

    def outbox_source_seq(self, pid: str) -> int | None:
        """The last result seq of a bridged process whose outbox was recorded (--deliver-bridged)."""
        row = self._conn().execute("SELECT seq FROM outbox_sources WHERE pid=?", (pid,)).fetchone()
        return row[0] if row else None

    def outbox_sources(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT pid FROM outbox_sources")]

    def put_source_outbox(self, pid: str, upto_seq: int, outgoing: dict[int, list[Outgoing]], now_ms: int,
                          block_height: int, build: AssignmentBuilder) -> list[LogEntry]:
        """The outbox of results computed elsewhere (a bridged process) for targets on this node, scheduled
        here, with the seq recorded so far, in one durable transaction (a repeat records nothing twice)."""
        def job(c: sqlite3.Connection) -> list[LogEntry]:
            new: list[LogEntry] = []
            for seq, outs in sorted(outgoing.items()):
                for out in outs:
                    self._put_outgoing(c, pid, seq, out, now_ms, block_height, build, new, local_only=True)
            c.execute("INSERT INTO outbox_sources VALUES (?,?) ON CONFLICT (pid) DO UPDATE SET seq=max(seq, ?)",
                      (pid, upto_seq, upto_seq))
            return new
        return self._write(job, True)
