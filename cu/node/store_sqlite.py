"""Embedded SQLite store (WAL). Log writes commit with synchronous=FULL, so an acknowledged message survives
power loss; results and checkpoints use NORMAL (they can be recomputed from the log).

Items keep the form they were received in: `raw` is the ANS-104 data item (codec `ans104`) or the framed signed
HTTP message (codec `httpsig`, see cu.node.signed_http); either way the data is `raw[data_offset:]`. Stores
created before the `codec` column existed get it on open (every existing item is `ans104`), and stores created
before the outbox had delivery states get those columns (delivered=1 -> `local`, 0 -> `pending`)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cu.node.fsmodes import private_db
from cu.node.store import (
    AssignmentBuilder,
    Checkpoint,
    ItemMeta,
    LogEntry,
    Outgoing,
    ProcessRow,
    ResultRow,
    ScheduleOp,
    Store,
    StoreError,
    processes_page_query,
    results_page_query,
)
from cu.node.store_outbox import OutboxStoreMixin

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, raw BLOB NOT NULL, data_offset INTEGER NOT NULL, owner TEXT NOT NULL,
    owner_key BLOB NOT NULL, target TEXT NOT NULL, anchor TEXT, signature TEXT NOT NULL, tags TEXT NOT NULL,
    kind TEXT NOT NULL, created INTEGER NOT NULL, codec TEXT NOT NULL DEFAULT 'ans104');
CREATE TABLE IF NOT EXISTS processes (
    id TEXT PRIMARY KEY, module TEXT NOT NULL, owner TEXT NOT NULL, tags TEXT NOT NULL,
    timestamp INTEGER NOT NULL, block_height INTEGER NOT NULL, nonce INTEGER NOT NULL,
    last_assignment TEXT NOT NULL, hash_chain TEXT NOT NULL, last_timestamp INTEGER NOT NULL,
    has_crons INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    pid TEXT NOT NULL, nonce INTEGER NOT NULL, message_id TEXT NOT NULL, assignment_id TEXT NOT NULL,
    timestamp INTEGER NOT NULL, block_height INTEGER NOT NULL, hash_chain TEXT NOT NULL, epoch INTEGER NOT NULL,
    PRIMARY KEY (pid, nonce)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS log_message ON log (pid, message_id);
CREATE TABLE IF NOT EXISTS results (
    pid TEXT NOT NULL, seq INTEGER NOT NULL, nonce INTEGER NOT NULL, cron TEXT, message_id TEXT,
    timestamp INTEGER NOT NULL, block_height INTEGER NOT NULL, error INTEGER NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (pid, seq));
CREATE INDEX IF NOT EXISTS results_message ON results (pid, message_id);
CREATE TABLE IF NOT EXISTS outbox (
    pid TEXT NOT NULL, seq INTEGER NOT NULL, idx INTEGER NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL,
    item_id TEXT NOT NULL, delivered INTEGER NOT NULL, PRIMARY KEY (pid, seq, idx));
CREATE TABLE IF NOT EXISTS outbox_sources (pid TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pruned (pid TEXT PRIMARY KEY, seq INTEGER NOT NULL, nonce INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    pid TEXT NOT NULL, seq INTEGER NOT NULL, nonce INTEGER NOT NULL, cron_ts INTEGER, timestamp INTEGER NOT NULL,
    module_hash TEXT NOT NULL, memory_root BLOB NOT NULL, snapshot BLOB NOT NULL, PRIMARY KEY (pid, seq));
CREATE TABLE IF NOT EXISTS checkpoint_deltas (
    pid TEXT NOT NULL, seq INTEGER NOT NULL, base_seq INTEGER NOT NULL, nonce INTEGER NOT NULL, cron_ts INTEGER,
    timestamp INTEGER NOT NULL, module_hash TEXT NOT NULL, memory_root BLOB NOT NULL, delta BLOB NOT NULL,
    PRIMARY KEY (pid, seq));
"""


# the delivery columns of `outbox` (added in place to stores written before they existed)
_OUTBOX_COLUMNS = ("state TEXT NOT NULL DEFAULT 'pending'", "remote TEXT", "attempts INTEGER NOT NULL DEFAULT 0",
                   "next_at INTEGER NOT NULL DEFAULT 0", "reason TEXT", "updated INTEGER NOT NULL DEFAULT 0",
                   "created INTEGER NOT NULL DEFAULT 0")

Job = Callable[[sqlite3.Connection], Any]


def _no_builder(*_args: object) -> tuple[bytes, ItemMeta]:
    raise StoreError("results without outbox effects schedule nothing")


def _tags_json(tags: list[tuple[str, str]]) -> str:
    return json.dumps([[n, v] for n, v in tags], ensure_ascii=False, separators=(",", ":"))


def _tags(text: str) -> list[tuple[str, str]]:
    return [(n, v) for n, v in json.loads(text)]


class SqliteStore(OutboxStoreMixin, Store):
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        private_db(self.path)  # 0600 whatever the umask (docs/SEALING.md)
        self._local = threading.local()
        self._pid = os.getpid()
        # (pid, connection) of _writing_conn and the synchronous mode it is in; its transactions hold _write_lock
        self._writer: tuple[int, sqlite3.Connection] | None = None
        self._writer_sync = ""
        self._write_lock: Any = threading.Lock()
        # every write goes through here; the evaluator process replaces it with its group committer so that
        # one thread writes and concurrent writes share a transaction (no busy-waiting on SQLite's lock)
        self.writer: Callable[[list[Job], bool], list[Any]] = self.transact
        # (job, durable, on_done) without waiting; None = write synchronously
        self.async_writer: Callable[[Job, bool, Callable[[Any], None]], None] | None = None
        self.keep_checkpoints = 2      # per process (--retain-checkpoints)
        # counts outbox entries written as `pending` (the evaluator wakes the deliverer when it moved)
        self.pending_written = 0
        self._conn().executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """In-place upgrades of stores written by earlier versions: checked read-only first, then re-checked
        inside a write transaction, so processes opening the same store at once upgrade it once."""
        def todo(c: sqlite3.Connection) -> tuple[bool, bool]:
            items = {r[1] for r in c.execute("PRAGMA table_info(items)")}
            outbox = {r[1] for r in c.execute("PRAGMA table_info(outbox)")}
            due = c.execute("SELECT 1 FROM sqlite_master WHERE name='outbox_due'").fetchone()
            return "codec" not in items, "state" not in outbox or due is None
        if not any(todo(self._conn())):
            return
        with self._write_lock, self._tx(durable=True) as c:
            codec, outbox = todo(c)
            if codec:
                c.execute("ALTER TABLE items ADD COLUMN codec TEXT NOT NULL DEFAULT 'ans104'")
            if outbox and "state" not in {r[1] for r in c.execute("PRAGMA table_info(outbox)")}:
                for col in _OUTBOX_COLUMNS:
                    c.execute(f"ALTER TABLE outbox ADD COLUMN {col}")
                c.execute("UPDATE outbox SET state = CASE WHEN delivered=1 THEN 'local' ELSE 'pending' END")
            c.execute("CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_at)")

    # connections ----------------------------------------------------------------------------------
    def _connect(self, *, shared: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=not shared)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=OFF")
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._pid != os.getpid():
            # one connection per thread and per process (gunicorn forks after the app is created)
            self._pid = os.getpid()
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _writing_conn(self) -> sqlite3.Connection:
        """The process's one connection for write transactions (the caller holds `_write_lock`). One, not one per
        thread: a connection that finds the database changed by another connection drops its whole page cache
        and reads every page it needs again (a pread each), so writers taking turns on their own connections
        (the group commit's leader is whichever thread finds the store idle) re-read ~13 pages per message."""
        if self._writer is None or self._writer[0] != os.getpid():
            self._writer, self._writer_sync = (os.getpid(), self._connect(shared=True)), ""
        return self._writer[1]

    def _begin(self, durable: bool) -> sqlite3.Connection:
        c = self._writing_conn()
        want = "FULL" if durable else "NORMAL"
        if self._writer_sync != want:
            c.execute(f"PRAGMA synchronous={want}")
            self._writer_sync = want
        c.execute("BEGIN IMMEDIATE")
        return c

    @contextmanager
    def _tx(self, *, durable: bool) -> Iterator[sqlite3.Connection]:
        c = self._begin(durable)
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def transact(self, jobs: list[Job], durable: bool) -> list[Any]:
        """Runs jobs in one transaction (one fsync when durable); a job that raises is rolled back alone and
        its exception is returned in its place."""
        with self._write_lock:
            return self._transact(jobs, durable)

    def _transact(self, jobs: list[Job], durable: bool) -> list[Any]:
        # optimistic: jobs rarely fail, so run them without savepoints (two statements less per job); if one
        # does, roll everything back; a job alone returns its exception, a batch is run again with each job in
        # its own savepoint (jobs only touch the store)
        c = self._begin(durable)
        try:
            out = [job(c) for job in jobs]
        except Exception as exc:  # noqa: BLE001 - returned in place, or redone below with the failure isolated
            c.execute("ROLLBACK")
            if len(jobs) == 1:
                return [exc]
        except BaseException:
            c.execute("ROLLBACK")
            raise
        else:
            c.execute("COMMIT")       # a failing commit raises: nothing was written
            return out
        out = []
        with self._tx(durable=durable) as c:
            for i, job in enumerate(jobs):
                c.execute(f"SAVEPOINT j{i}")
                try:
                    out.append(job(c))
                except Exception as exc:  # noqa: BLE001 - this job fails alone; the others commit
                    c.execute(f"ROLLBACK TO j{i}")
                    out.append(exc)
                c.execute(f"RELEASE j{i}")
        return out

    def _write(self, job: Job, durable: bool) -> Any:
        (res,) = self.writer([job], durable)
        if isinstance(res, Exception):
            raise res
        return res

    def flush(self) -> None:
        """Returns once every write queued so far (write-behind results included) is committed: an empty job
        goes through the same group writer, which commits in queue order."""
        self._write(lambda _c: None, False)

    def close(self) -> None:
        """Closes this thread's connection, and the writing connection once a transaction in progress has ended."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        with self._write_lock:
            if self._writer is not None and self._writer[0] == os.getpid():
                self._writer[1].close()
            self._writer = None

    # items ----------------------------------------------------------------------------------------
    @staticmethod
    def _insert_item(c: sqlite3.Connection, meta: ItemMeta, raw: bytes, data_offset: int) -> bool:
        cur = c.execute(
            "INSERT OR IGNORE INTO items (id, raw, data_offset, owner, owner_key, target, anchor, signature, tags, "
            "kind, created, codec) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (meta.id, raw, data_offset, meta.owner, meta.owner_key, meta.target, meta.anchor, meta.signature,
             _tags_json(meta.tags), meta.kind, meta.created_ms, meta.codec))
        return cur.rowcount == 1

    def put_item(self, meta: ItemMeta, raw: bytes, data_offset: int | None = None) -> bool:
        off = len(raw) - meta.size if data_offset is None else data_offset
        return self._write(lambda c: self._insert_item(c, meta, raw, off), True)

    _META = ("SELECT id, owner, owner_key, target, anchor, signature, tags, kind, created, length(raw) - data_offset, "
             "codec")

    @staticmethod
    def _meta(row: tuple) -> ItemMeta:
        (id_, owner, owner_key, target, anchor, signature, tags, kind, created, size, codec) = row
        return ItemMeta(id=id_, owner=owner, owner_key=bytes(owner_key), target=target, anchor=anchor,
                        signature=signature, tags=_tags(tags), kind=kind, created_ms=created, size=size,
                        codec=codec)

    def item_meta(self, item_id: str) -> ItemMeta | None:
        row = self._conn().execute(self._META + " FROM items WHERE id=?", (item_id,)).fetchone()
        return self._meta(row) if row else None

    def item_with_data(self, item_id: str) -> tuple[ItemMeta, bytes] | None:
        row = self._conn().execute(self._META + ", substr(raw, data_offset + 1) FROM items WHERE id=?",
                                   (item_id,)).fetchone()
        return (self._meta(row[:11]), bytes(row[11])) if row else None

    def item_raw(self, item_id: str) -> bytes | None:
        row = self._conn().execute("SELECT raw FROM items WHERE id=?", (item_id,)).fetchone()
        return bytes(row[0]) if row else None

    def item_data(self, item_id: str) -> bytes | None:
        row = self._conn().execute("SELECT substr(raw, data_offset + 1) FROM items WHERE id=?",
                                   (item_id,)).fetchone()
        return bytes(row[0]) if row else None

    # processes and the log ------------------------------------------------------------------------
    def spawn(self, meta: ItemMeta, raw: bytes, module: str, now_ms: int, block_height: int,
              build: AssignmentBuilder, has_crons: bool = False) -> LogEntry:
        return self._write(lambda c: self._spawn(c, meta, raw, module, now_ms, block_height, build, has_crons),
                           True)

    def _spawn(self, c: sqlite3.Connection, meta: ItemMeta, raw: bytes, module: str, now_ms: int,
               block_height: int, build: AssignmentBuilder, has_crons: bool) -> LogEntry:
        existing = c.execute("SELECT 1 FROM processes WHERE id=?", (meta.id,)).fetchone()
        if existing:
            entry = self._entry(c, meta.id, 0)
            assert entry is not None
            return entry
        self._insert_item(c, meta, raw, len(raw) - meta.size)
        from cu import hashing
        hash_chain = hashing.su_hash_chain(None, None, meta.id)
        a_raw, a_meta = build(meta.id, meta.id, 0, now_ms, block_height, hash_chain, 0)
        self._insert_item(c, a_meta, a_raw, len(a_raw) - a_meta.size)
        c.execute("INSERT INTO processes VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                  (meta.id, module, meta.owner, _tags_json(meta.tags), now_ms, block_height, 0, a_meta.id,
                   hash_chain, now_ms, int(has_crons)))
        entry = LogEntry(meta.id, 0, meta.id, a_meta.id, now_ms, block_height, hash_chain, 0)
        self._insert_entry(c, entry)
        return entry

    @staticmethod
    def _insert_entry(c: sqlite3.Connection, e: LogEntry) -> None:
        c.execute("INSERT INTO log VALUES (?,?,?,?,?,?,?,?)",
                  (e.pid, e.nonce, e.message_id, e.assignment_id, e.timestamp, e.block_height, e.hash_chain,
                   e.epoch))

    def schedule(self, pid: str, message_id: str, now_ms: int, block_height: int, build: AssignmentBuilder,
                 item: tuple[ItemMeta, bytes] | None = None) -> tuple[LogEntry, bool]:
        return self._write(lambda c: self._schedule(c, pid, message_id, now_ms, block_height, build, item), True)

    def _schedule(self, c: sqlite3.Connection, pid: str, message_id: str, now_ms: int, block_height: int,
                  build: AssignmentBuilder, item: tuple[ItemMeta, bytes] | None) -> tuple[LogEntry, bool]:
        row = c.execute("SELECT nonce, last_assignment, hash_chain, last_timestamp, "
                        "(SELECT nonce FROM log WHERE pid=?1 AND message_id=?2) FROM processes WHERE id=?1",
                        (pid, message_id)).fetchone()
        if row is None:
            raise StoreError(f"Process {pid} not found")
        if row[4] is not None:     # already scheduled: the same slot (idempotent re-post)
            entry = self._entry(c, pid, row[4])
            assert entry is not None
            return entry, False
        if item is not None:
            meta, raw = item
            self._insert_item(c, meta, raw, len(raw) - meta.size)
        nonce, last_assignment, prev_hc, last_ts = row[:4]
        from cu import hashing
        hash_chain = hashing.su_hash_chain(last_assignment, prev_hc, pid)
        nonce += 1
        ts = max(now_ms, last_ts)
        a_raw, a_meta = build(pid, message_id, nonce, ts, block_height, hash_chain, 0)
        self._insert_item(c, a_meta, a_raw, len(a_raw) - a_meta.size)
        c.execute("UPDATE processes SET nonce=?, last_assignment=?, hash_chain=?, last_timestamp=? WHERE id=?",
                  (nonce, a_meta.id, hash_chain, ts, pid))
        entry = LogEntry(pid, nonce, message_id, a_meta.id, ts, block_height, hash_chain, 0)
        self._insert_entry(c, entry)
        return entry, True

    def schedule_batch(self, ops: list[ScheduleOp], now_ms: int, block_height: int,
                       build: AssignmentBuilder) -> list[tuple[LogEntry, bool] | Exception]:
        return self.writer([self.schedule_job(op, now_ms, block_height, build) for op in ops], True)

    def schedule_job(self, op: ScheduleOp, now_ms: int, block_height: int, build: AssignmentBuilder) -> Job:
        def job(c: sqlite3.Connection) -> tuple[LogEntry, bool]:
            if op.kind == "spawn":
                assert op.item is not None
                fresh = c.execute("SELECT 1 FROM processes WHERE id=?", (op.pid,)).fetchone() is None
                return self._spawn(c, op.item[0], op.item[1], op.module, now_ms, block_height, build,
                                   op.has_crons), fresh
            return self._schedule(c, op.pid, op.message_id, now_ms, block_height, build, op.item)
        return job

    def process(self, pid: str) -> ProcessRow | None:
        row = self._conn().execute(
            "SELECT id, module, owner, tags, timestamp, block_height, nonce, last_timestamp FROM processes "
            "WHERE id=?", (pid,)).fetchone()
        if row is None:
            return None
        return ProcessRow(id=row[0], module=row[1], owner=row[2], tags=_tags(row[3]), timestamp=row[4],
                          block_height=row[5], nonce=row[6], last_timestamp=row[7])

    def processes_with_crons(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT id FROM processes WHERE has_crons=1")]

    def all_processes(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT id FROM processes")]

    def process_ids(self, *, after: str, limit: int) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT id FROM processes WHERE id > ? ORDER BY id LIMIT ?",
                                                   (after, limit))]

    @staticmethod
    def _entry(c: sqlite3.Connection, pid: str, nonce: int) -> LogEntry | None:
        row = c.execute("SELECT * FROM log WHERE pid=? AND nonce=?", (pid, nonce)).fetchone()
        return LogEntry(*row) if row else None

    def log_entry(self, pid: str, nonce: int) -> LogEntry | None:
        if not 0 <= nonce < 1 << 63:    # not a storable nonce (SQLite would raise OverflowError): none such
            return None
        return self._entry(self._conn(), pid, nonce)

    def log_entry_by_message(self, pid: str, message_id: str) -> LogEntry | None:
        row = self._conn().execute("SELECT * FROM log WHERE pid=? AND message_id=?", (pid, message_id)).fetchone()
        return LogEntry(*row) if row else None

    def log_range(self, pid: str, first_nonce: int, last_nonce: int) -> list[LogEntry]:
        rows = self._conn().execute("SELECT * FROM log WHERE pid=? AND nonce BETWEEN ? AND ? ORDER BY nonce",
                                    (pid, first_nonce, last_nonce)).fetchall()
        return [LogEntry(*r) for r in rows]

    def log_page(self, pid: str, *, from_nonce: int | None, from_ts: int | None, to_ts: int | None,
                 limit: int) -> tuple[list[LogEntry], bool]:
        q = "SELECT * FROM log WHERE pid=?"
        args: list[object] = [pid]
        if from_nonce is not None:
            q += " AND nonce > ?"
            args.append(from_nonce)
        if from_ts is not None:
            q += " AND timestamp > ?"
            args.append(from_ts)
        if to_ts is not None:
            q += " AND timestamp <= ?"
            args.append(to_ts)
        q += " ORDER BY nonce LIMIT ?"
        args.append(limit + 1)
        rows = [LogEntry(*r) for r in self._conn().execute(q, args).fetchall()]
        return rows[:limit], len(rows) > limit

    def advance_time(self, pid: str, now_ms: int) -> int:
        def job(c: sqlite3.Connection) -> int:
            row = c.execute("SELECT last_timestamp FROM processes WHERE id=?", (pid,)).fetchone()
            if row is None:
                raise StoreError(f"Process {pid} not found")
            ts = max(row[0], now_ms)
            if ts != row[0]:
                c.execute("UPDATE processes SET last_timestamp=? WHERE id=?", (ts, pid))
            return ts
        return self._write(job, True)

    # results --------------------------------------------------------------------------------------
    @staticmethod
    def _result(row: tuple) -> ResultRow:
        pid, seq, nonce, cron, message_id, ts, height, error, body = row
        return ResultRow(pid, seq, nonce, cron, message_id, ts, height, bool(error), bytes(body))

    def last_result(self, pid: str) -> ResultRow | None:
        row = self._conn().execute("SELECT * FROM results WHERE pid=? ORDER BY seq DESC LIMIT 1",
                                   (pid,)).fetchone()
        return self._result(row) if row else None

    def last_result_nonce(self, pid: str) -> int | None:
        # the crank asks this of every idle process it passes over: the primary key answers it, no body read
        row = self._conn().execute("SELECT nonce FROM results WHERE pid=? ORDER BY seq DESC LIMIT 1",
                                   (pid,)).fetchone()
        return int(row[0]) if row else None

    def put_results(self, rows: list[ResultRow], outgoing: dict[int, list[Outgoing]],
                    now_ms: int, block_height: int, build: AssignmentBuilder) -> list[LogEntry]:
        if not rows:
            return []
        # durable when it schedules something: the outbox delivery must not be lost once its result is
        return self._write(lambda c: self._put_results(c, rows, outgoing, now_ms, block_height, build),
                           bool(outgoing))

    def put_results_async(self, rows: list[ResultRow], done: Callable[[Any], None]) -> None:
        """Results without outbox effects, written behind (in order with every other write)."""
        def job(c: sqlite3.Connection) -> list[LogEntry]:
            return self._put_results(c, rows, {}, 0, 0, _no_builder)
        if self.async_writer is None:
            done(self._write(job, False))
        else:
            self.async_writer(job, False, done)

    def _put_results(self, c: sqlite3.Connection, rows: list[ResultRow], outgoing: dict[int, list[Outgoing]],
                     now_ms: int, block_height: int, build: AssignmentBuilder) -> list[LogEntry]:
        new_entries: list[LogEntry] = []
        pruned: dict[str, int] = {}
        for r in rows:
            if r.pid not in pruned:
                got = c.execute("SELECT seq FROM pruned WHERE pid=?", (r.pid,)).fetchone()
                pruned[r.pid] = got[0] if got else -1
            if r.seq <= pruned[r.pid]:
                continue        # recomputed after retention removed it (cu/node/retention.py): not stored again,
                                # and its outbox not delivered again
            cur = c.execute("INSERT OR IGNORE INTO results VALUES (?,?,?,?,?,?,?,?,?)",
                            (r.pid, r.seq, r.nonce, r.cron, r.message_id, r.timestamp, r.block_height,
                             int(r.error), r.body))
            if cur.rowcount != 1:
                continue        # recomputed after a restart: the stored result and its deliveries stand
            for out in outgoing.get(r.seq, []):
                self._put_outgoing(c, r.pid, r.seq, out, now_ms, block_height, build, new_entries)
        return new_entries

    def _put_outgoing(self, c: sqlite3.Connection, pid: str, seq: int, out: Outgoing, now_ms: int,
                      block_height: int, build: AssignmentBuilder, new_entries: list[LogEntry],
                      local_only: bool = False) -> None:
        """Records one outbox effect: scheduled here at once when its target is local (`local`), else
        `pending` for the deliverer (due now), or `failed` when it cannot go anywhere. `local_only`: effects
        for targets elsewhere are not recorded (bridged processes: the legacy MU delivers those)."""
        if out.item_raw is not None and out.item_meta is not None:
            self._insert_item(c, out.item_meta, out.item_raw, len(out.item_raw) - out.item_meta.size)
        state, remote, reason = "pending", None, None
        if out.kind == "Spawn" and out.item_meta is not None and out.item_raw is not None and not out.scheduler:
            module = next((v for n, v in out.item_meta.tags if n == "Module"), "")
            if c.execute("SELECT 1 FROM items WHERE id=? AND kind='Module'", (module,)).fetchone():
                has_crons = any(n == "Cron-Interval" for n, _ in out.item_meta.tags)
                entry = self._spawn(c, out.item_meta, out.item_raw, module, now_ms, block_height, build, has_crons)
                new_entries.append(entry)
                state, remote = "local", "local slot 0"
            else:
                state, reason = "failed", f"module {module or '(none)'} of the spawn is not on this node"
        elif out.kind != "Spawn" and c.execute("SELECT 1 FROM processes WHERE id=?", (out.target,)).fetchone():
            entry, fresh = self._schedule(c, out.target, out.item_id, now_ms, block_height, build, None)
            if fresh:
                new_entries.append(entry)
            state, remote = "local", f"local slot {entry.nonce}"
        elif local_only:
            return
        if state == "pending":
            self.pending_written += 1
        c.execute("INSERT OR IGNORE INTO outbox (pid, seq, idx, kind, target, item_id, delivered, state, remote, "
                  "attempts, next_at, reason, updated, created) VALUES (?,?,?,?,?,?,?,?,?,0,?,?,?,?)",
                  (pid, seq, out.idx, out.kind, out.target, out.item_id, int(state == "local"), state, remote,
                   now_ms, reason, now_ms, now_ms))

    def result_by_message(self, pid: str, message_id: str) -> ResultRow | None:
        row = self._conn().execute("SELECT * FROM results WHERE pid=? AND message_id=?",
                                   (pid, message_id)).fetchone()
        return self._result(row) if row else None

    def result_by_seq(self, pid: str, seq: int) -> ResultRow | None:
        row = self._conn().execute("SELECT * FROM results WHERE pid=? AND seq=?", (pid, seq)).fetchone()
        return self._result(row) if row else None

    def results_page(self, pid: str, *, after: tuple[int, int] | None, until: tuple[int, int] | None,
                     descending: bool, limit: int, crons_only: bool,
                     skip_errors: bool) -> tuple[list[ResultRow], bool]:
        q, args = results_page_query(pid, after=after, until=until, descending=descending, limit=limit,
                                     crons_only=crons_only, skip_errors=skip_errors)
        rows = [self._result(r) for r in self._conn().execute(q, args).fetchall()]
        return rows[:limit], len(rows) > limit

    def seq_for(self, pid: str, timestamp: int, nonce: int, cron: str | None) -> int | None:
        if cron is None:
            row = self._conn().execute("SELECT seq FROM results WHERE pid=? AND timestamp=? AND nonce=? AND "
                                       "cron IS NULL", (pid, timestamp, nonce)).fetchone()
        else:
            row = self._conn().execute("SELECT seq FROM results WHERE pid=? AND timestamp=? AND nonce=? AND "
                                       "cron=?", (pid, timestamp, nonce, cron)).fetchone()
        return row[0] if row else None

    def outbox_rows(self, pid: str) -> list[tuple]:
        """(pid, seq, idx, kind, target, item_id, delivered) per entry (delivered: 1 = local or delivered)."""
        return self._conn().execute("SELECT pid, seq, idx, kind, target, item_id, delivered FROM outbox WHERE "
                                    "pid=? ORDER BY seq, idx", (pid,)).fetchall()

    # checkpoints ----------------------------------------------------------------------------------
    def put_checkpoint(self, cp: Checkpoint, keep: int | None = None) -> None:
        n = self.keep_checkpoints if keep is None else keep
        self._write(lambda c: self._put_checkpoint(c, cp, n), False)

    def pruned_nonce(self, pid: str) -> int:
        """Results of messages up to this nonce were removed by the retention policy (-1: none)."""
        row = self._conn().execute("SELECT nonce FROM pruned WHERE pid=?", (pid,)).fetchone()
        return row[0] if row else -1

    @staticmethod
    def _put_checkpoint(c: sqlite3.Connection, cp: Checkpoint, keep: int) -> None:
        c.execute("INSERT OR REPLACE INTO checkpoints VALUES (?,?,?,?,?,?,?,?)",
                  (cp.pid, cp.seq, cp.nonce, cp.cron_ts, cp.timestamp, cp.module_hash, cp.memory_root,
                   cp.snapshot))
        c.execute("DELETE FROM checkpoints WHERE pid=? AND seq NOT IN "
                  "(SELECT seq FROM checkpoints WHERE pid=? ORDER BY seq DESC LIMIT ?)", (cp.pid, cp.pid, keep))

    def latest_checkpoint(self, pid: str) -> Checkpoint | None:
        row = self._conn().execute("SELECT * FROM checkpoints WHERE pid=? ORDER BY seq DESC LIMIT 1",
                                   (pid,)).fetchone()
        if row is None:
            return None
        return Checkpoint(row[0], row[1], row[2], row[3], row[4], row[5], bytes(row[6]), bytes(row[7]))

    def put_checkpoint_delta(self, cp: Checkpoint, base_seq: int) -> None:
        def job(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM checkpoint_deltas WHERE pid=? AND base_seq<?", (cp.pid, base_seq))
            c.execute("INSERT OR REPLACE INTO checkpoint_deltas VALUES (?,?,?,?,?,?,?,?,?)",
                      (cp.pid, cp.seq, base_seq, cp.nonce, cp.cron_ts, cp.timestamp, cp.module_hash,
                       cp.memory_root, cp.snapshot))
        self._write(job, False)

    def checkpoint_deltas(self, pid: str, base_seq: int) -> list[Checkpoint]:
        rows = self._conn().execute("SELECT pid, seq, nonce, cron_ts, timestamp, module_hash, memory_root, delta "
                                    "FROM checkpoint_deltas WHERE pid=? AND base_seq=? ORDER BY seq",
                                    (pid, base_seq)).fetchall()
        return [Checkpoint(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]), bytes(r[7])) for r in rows]

    def stats(self) -> dict[str, int]:
        c = self._conn()
        out = {}
        for table in ("items", "processes", "log", "results", "checkpoints"):
            out[table] = c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return out

    def processes_page(self, before: tuple[int, str] | None, limit: int) -> tuple[list[ProcessRow], bool]:
        rows = self._conn().execute(*processes_page_query(before, limit)).fetchall()
        return [ProcessRow(r[0], r[1], r[2], [], *r[4:]) for r in rows[:limit]], len(rows) > limit
