"""PostgreSQL store (`aocu serve --store postgresql://...`): the same tables and semantics as the embedded SQLite
store, so that several nodes can share one database (cu/node/cluster.py: leases, node registry, forwarding).

`PgStore` is `SqliteStore` with a PostgreSQL connection: every statement the store, its outbox mixin, the legacy
reads and the retention jobs run goes through `_PgConn`, which rewrites SQLite's dialect (`?` parameters,
`INSERT OR IGNORE/REPLACE`, two-argument `max`, `BEGIN IMMEDIATE`, `PRAGMA synchronous`) once per statement text.
One semantic addition for concurrent writers on several nodes: scheduling, spawning and moving a process's clock
take a transaction-scoped advisory lock on the process id first, so the read-then-write of the next nonce and
hash chain is serialized across nodes (never two messages on one slot; the chain continues across owners).
Jobs that conflict with another node's group commit (a deadlock, or a lock wait over 200 ms: the sign of one)
are run again; a lost connection answers Unavailable (503) and is replaced on the next use.

Durability: a durable write commits with `synchronous_commit=on` (the WAL is flushed, as SQLite's FULL), others
with `off` (a crash may lose them; they are recomputed from the log, as with SQLite's NORMAL)."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from typing import Any

from cu.node import store_sqlite as lite
from cu.node.errors import Unavailable
from cu.node.store import (
    AssignmentBuilder,
    ItemMeta,
    LogEntry,
    StoreError,
)
from cu.node.store_sqlite import Job, SqliteStore


def _pg_ddl(sqlite_ddl: str) -> str:
    """SQLite DDL in PostgreSQL types: INTEGER -> BIGINT (data_offset stays INTEGER: substr() takes one), BLOB ->
    BYTEA, TEXT compared bytewise (COLLATE "C", as SQLite's default BINARY collation: pages by id agree)."""
    ddl = sqlite_ddl.replace(") WITHOUT ROWID;", ");")
    ddl = re.sub(r"\bBLOB\b", "BYTEA", ddl)
    ddl = re.sub(r"\bINTEGER\b", "BIGINT", ddl)
    ddl = re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', ddl)
    return ddl.replace("data_offset BIGINT", "data_offset INTEGER")


# The SQLite store's schema, derived (tables added there appear here), with the outbox delivery columns its
# migration adds, and the cluster's tables (cu/node/cluster.py).
SCHEMA = _pg_ddl(lite.SCHEMA + "".join(f"ALTER TABLE outbox ADD COLUMN IF NOT EXISTS {col};\n"
                                       for col in lite._OUTBOX_COLUMNS)) + _pg_ddl("""
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_at);
CREATE INDEX IF NOT EXISTS log_assignment ON log (pid, assignment_id);
CREATE TABLE IF NOT EXISTS nodes (id TEXT PRIMARY KEY, url TEXT NOT NULL, expires TIMESTAMPTZ NOT NULL,
    started TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS leases (pid TEXT PRIMARY KEY, owner TEXT NOT NULL, since TIMESTAMPTZ NOT NULL,
    epoch INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS leases_owner ON leases (owner);
""")
SCHEMA_LOCK = 0x616F6375     # advisory lock id: nodes starting together create the schema once

# each table's columns and primary key (INSERT OR REPLACE becomes an upsert on it)
_COLUMNS: dict[str, tuple[str, ...]] = {}
_KEYS: dict[str, tuple[str, ...]] = {}
for _m in re.finditer(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\);", SCHEMA, re.S):
    _defs = [d.strip() for d in re.split(r",\s*(?![^()]*\))", _m.group(2))]
    _COLUMNS[_m.group(1)] = tuple(d.split()[0] for d in _defs if not d.startswith("PRIMARY KEY"))
    _pk = [d for d in _defs if d.startswith("PRIMARY KEY")]
    _KEYS[_m.group(1)] = (tuple(c.strip() for c in _pk[0][_pk[0].index("(") + 1:-1].split(",")) if _pk else
                          tuple(d.split()[0] for d in _defs if "PRIMARY KEY" in d))
for _m in re.finditer(r"ALTER TABLE (\w+) ADD COLUMN IF NOT EXISTS (\w+)", SCHEMA):
    _COLUMNS[_m.group(1)] += (_m.group(2),)

_INSERT = re.compile(r"^\s*INSERT OR (IGNORE|REPLACE) INTO (\w+)(\s*\(([^)]*)\))?", re.I)
_MAX2 = re.compile(r"\bmax\((\w+),\s*")
_NUMBERED = re.compile(r"\?(\d+)")


def translate(sql: str) -> tuple[str, bool]:
    """SQLite statement -> (PostgreSQL statement, whether its parameters are numbered `?N`)."""
    s = sql.strip()
    if s.upper().startswith("PRAGMA SYNCHRONOUS="):
        return ("SET synchronous_commit = " + ("off" if s.upper().endswith("NORMAL") else "on"), False)
    if s.upper() == "BEGIN IMMEDIATE":
        return "BEGIN", False
    s = s.replace("%", "%%")
    m = _INSERT.match(s)
    if m:
        mode, table = m.group(1).upper(), m.group(2)
        s = "INSERT INTO " + s[len("INSERT OR " + m.group(1) + " INTO "):].lstrip()
        if mode == "IGNORE":
            s += " ON CONFLICT DO NOTHING"
        else:
            cols = [c.strip() for c in m.group(4).split(",")] if m.group(4) else list(_COLUMNS[table])
            keys = _KEYS[table]
            s += (f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
                  + ", ".join(f"{c}=excluded.{c}" for c in cols if c not in keys))
    up = re.search(r"\bINSERT INTO (\w+).*\bDO UPDATE SET\b", s, re.S | re.I)
    if up:   # SQLite's scalar max(a, b) in an upsert: GREATEST, with the existing row's column qualified
        head, tail = s[:up.end()], s[up.end():]
        s = head + _MAX2.sub(lambda mm: f"GREATEST({up.group(1)}.{mm.group(1)}, ", tail)
    numbered = bool(_NUMBERED.search(s))
    s = _NUMBERED.sub(lambda mm: f"%(p{mm.group(1)})s", s) if numbered else s.replace("?", "%s")
    return s, numbered


class _PgConn:
    """The sqlite3.Connection subset the store's jobs use, over one psycopg connection (autocommit: the store's
    own BEGIN / COMMIT / SAVEPOINT statements delimit transactions, as with SQLite's isolation_level=None)."""

    _cache: dict[str, tuple[str, bool]] = {}

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Any = ()) -> Any:
        got = self._cache.get(sql)
        if got is None:
            got = self._cache[sql] = translate(sql)
        text, numbered = got
        if numbered:
            params = {f"p{i + 1}": v for i, v in enumerate(params)}
        try:
            return self.raw.execute(text, params or None)
        except _operational() as exc:
            if _retryable(exc):     # a conflict with another node's transaction: transact() runs it again
                raise
            # the connection, not the statement: 503, and a new connection next time
            raise Unavailable(f"store unavailable: {_line(exc)}") from None

    def close(self) -> None:
        self.raw.close()


def _line(exc: BaseException) -> str:
    """libpq's multi-line messages as one line."""
    return " ".join(str(exc).split())


def _operational() -> type[Exception]:
    import psycopg
    return psycopg.OperationalError


def _retryable(exc: BaseException) -> bool:
    import psycopg
    return isinstance(exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure
                      | psycopg.errors.LockNotAvailable)


def redact(dsn: str) -> str:
    """The DSN without its password (for logs and errors)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)


class PgStore(SqliteStore):
    def __init__(self, dsn: str) -> None:     # noqa: D107 - SqliteStore's state without the file
        self.dsn = dsn
        self.path = redact(dsn)
        self._local = threading.local()
        self._pid = os.getpid()
        self._stale: list[Any] = []      # connections inherited over a fork: never closed from the child
        # transactions run on each thread's own connection (PostgreSQL has no shared page cache to keep warm)
        self._write_lock = contextlib.nullcontext()
        self.writer = self.transact
        self.async_writer = None
        self.keep_checkpoints = 2
        self.pending_written = 0
        self.node_id: str | None = None  # set by the cluster: a spawn leases the new process to this node
        self.lease_s = 10.0
        with self._tx(durable=True) as c:
            c.raw.execute("SET LOCAL lock_timeout = 0")
            c.raw.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    c.raw.execute(stmt)

    def _migrate(self) -> None:
        return None

    # connections ----------------------------------------------------------------------------------
    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._pid != os.getpid() or conn.raw.broken:
            import psycopg
            if conn is not None and self._pid != os.getpid():
                self._stale.append(conn)    # the parent's: never closed from here
            elif conn is not None:
                conn.raw.close()            # lost (the server restarted or the network failed): a new one
            self._pid = os.getpid()
            try:
                raw = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
            except psycopg.Error as exc:
                raise StoreError(f"cannot connect to {self.path}: {_line(exc)}") from None
            # a lock wait this long is a cycle between two nodes' group commits (PostgreSQL would detect it
            # only after deadlock_timeout, 1 s): the job fails alone and transact() runs it again
            raw.execute("SET lock_timeout = '200ms'")
            conn = _PgConn(raw)
            self._local.conn = conn
            self._local.sync = None
        return conn

    def connect(self) -> Any:
        """A separate autocommit psycopg connection (the cluster's heartbeat and listener)."""
        import psycopg
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)

    def _begin(self, durable: bool) -> Any:
        # one round trip: the durability is the transaction's own (SET LOCAL), not the connection's
        c = self._conn()
        c.raw.execute("BEGIN; SET LOCAL synchronous_commit = " + ("on" if durable else "off"))
        return c

    def transact(self, jobs: list[Job], durable: bool) -> list[Any]:
        """SqliteStore.transact; jobs that PostgreSQL aborted for a deadlock or a serialization conflict with
        another node's transaction are run again (they were rolled back alone)."""
        out = super().transact(jobs, durable)
        for _ in range(8):
            again = [i for i, r in enumerate(out) if isinstance(r, Exception) and _retryable(r)]
            if not again:
                break
            for i, r in zip(again, super().transact([jobs[i] for i in again], durable), strict=True):
                out[i] = r
        # still conflicting after the retries: the write did not happen; the client may try again (503)
        return [Unavailable(f"store busy ({_line(r)}); try again") if isinstance(r, Exception)
                and _retryable(r) else r for r in out]

    def problem(self, timeout_s: float = 2.0) -> str | None:
        """Why the database cannot take writes now (None: it can), on a fresh connection (for /ready)."""
        import psycopg
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=max(1, int(timeout_s))) as c:
                c.execute(f"SET statement_timeout = {int(timeout_s * 1000)}")
                if c.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    return f"store {self.path} is a read-only standby"
        except psycopg.Error as exc:
            return f"store {self.path} is not reachable: {_line(exc)}"
        return None

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._pid == os.getpid():
            conn.close()
        self._local.conn = None

    # cross-node serialization of a process's log -----------------------------------------------------
    @staticmethod
    def _lock_process(c: Any, pid: str, notify: bool = False) -> None:
        """The process's lock until the transaction ends; `notify`: and tell every node about it at commit
        (`aocu_sched`: the owner's crank evaluates; a repeat of an already scheduled message only wakes it)."""
        if notify:
            c.raw.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0)), pg_notify('aocu_sched', %s)",
                          (pid, pid))
        else:
            c.raw.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (pid,))

    def _spawn(self, c: Any, meta: ItemMeta, raw: bytes, module: str, now_ms: int, block_height: int,
               build: AssignmentBuilder, has_crons: bool) -> LogEntry:
        self._lock_process(c, meta.id, notify=True)
        fresh = c.execute("SELECT 1 FROM processes WHERE id=?", (meta.id,)).fetchone() is None
        entry = super()._spawn(c, meta, raw, module, now_ms, block_height, build, has_crons)
        if fresh and self.node_id is not None:
            # the node that spawns a process owns it first (cu/node/cluster.py)
            c.raw.execute("INSERT INTO leases VALUES (%s, %s, clock_timestamp(), 1) ON CONFLICT DO NOTHING",
                          (meta.id, self.node_id))
        return entry

    def _schedule(self, c: Any, pid: str, message_id: str, now_ms: int, block_height: int,
                  build: AssignmentBuilder, item: tuple[ItemMeta, bytes] | None) -> tuple[LogEntry, bool]:
        self._lock_process(c, pid, notify=True)     # the owner's evaluator hears it (cu/node/cluster.py)
        return super()._schedule(c, pid, message_id, now_ms, block_height, build, item)

    def advance_time(self, pid: str, now_ms: int) -> int:
        def job(c: Any) -> int:
            self._lock_process(c, pid)
            row = c.execute("SELECT last_timestamp FROM processes WHERE id=?", (pid,)).fetchone()
            if row is None:
                raise StoreError(f"Process {pid} not found")
            ts = max(row[0], now_ms)
            if ts != row[0]:
                c.execute("UPDATE processes SET last_timestamp=? WHERE id=?", (ts, pid))
            return ts
        return self._write(job, True)
