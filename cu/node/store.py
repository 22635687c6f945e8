"""Storage interface of the node. `SqliteStore` (store_sqlite.py) is the embedded default; a server database
implements the same methods."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

Tag = tuple[str, str]


class StoreError(Exception):
    pass


class NotFound(StoreError):
    pass


@dataclass(frozen=True)
class ItemMeta:
    id: str
    owner: str                 # owner address (docs/ABI.md, Message, env and result)
    owner_key: bytes
    target: str
    anchor: str | None
    signature: str             # b64url
    tags: list[Tag]
    kind: str                  # Module | Process | Message | Assignment | Other
    created_ms: int
    size: int                  # length of the data (the last `size` bytes of the stored raw form)
    codec: str = "ans104"      # ans104: raw = the data item; httpsig: raw = the signed HTTP message (signed_http)


@dataclass(frozen=True)
class ProcessRow:
    id: str
    module: str
    owner: str
    tags: list[Tag]
    timestamp: int             # process (nonce 0) timestamp
    block_height: int
    nonce: int                 # last assigned nonce
    last_timestamp: int


@dataclass(frozen=True)
class LogEntry:
    pid: str
    nonce: int
    message_id: str
    assignment_id: str
    timestamp: int
    block_height: int
    hash_chain: str
    epoch: int


@dataclass(frozen=True)
class ResultRow:
    pid: str
    seq: int                   # position in the evaluated stream (messages and crons)
    nonce: int                 # the scheduled message's nonce, or the preceding one for a cron
    cron: str | None
    message_id: str | None
    timestamp: int
    block_height: int
    error: bool
    body: bytes                # merged legacy result JSON


@dataclass(frozen=True)
class Checkpoint:
    pid: str
    seq: int
    nonce: int
    cron_ts: int | None        # last evaluated cron time after `nonce`, if any
    timestamp: int
    module_hash: str
    memory_root: bytes
    snapshot: bytes            # zstd-compressed Snapshot.to_bytes()


# Builds and signs the assignment for (pid, message id, nonce, timestamp, block_height, hash_chain, epoch):
# returns (raw assignment data item, its ItemMeta).
AssignmentBuilder = Callable[[str, str, int, int, int, str, int], tuple[bytes, ItemMeta]]


@dataclass(frozen=True)
class Outgoing:
    """An outbox effect persisted with the result that produced it (delivered exactly once)."""
    idx: int
    kind: str                  # Message | Spawn | Assignment
    target: str                # pid to schedule on
    item_id: str               # message id to assign
    item_raw: bytes | None     # a new data item to store first (outbox message/spawn), else None
    item_meta: ItemMeta | None
    scheduler: str | None = None   # a Spawn naming another scheduler than this node (delivered there)


# Outbox entry states (docs/EXCHANGE.md): `local` = scheduled on this node in the transaction that stored the
# result; `pending` = waiting for the deliverer (cu/node/exchange); `delivered` = the target's scheduler took it
# (or it was scheduled here later); `failed` = given up, `reason` says why.
OUTBOX_STATES = ("local", "pending", "delivered", "failed")


@dataclass(frozen=True)
class OutboxEntry:
    pid: str                   # the sending process
    seq: int                   # its result's seq
    idx: int                   # position in that result's outbox (Messages, then Spawns, then Assignments)
    kind: str                  # Message | Spawn | Assignment
    target: str                # the target process (for a Spawn: the new process id)
    item_id: str               # the message (or spawn) item; for an Assignment the assigned message
    state: str                 # one of OUTBOX_STATES
    remote: str | None         # where it went: "local slot N", "PEER slot N", "SU id X at T", ...
    attempts: int              # delivery attempts made
    next_at: int               # ms: when a pending entry is due next
    reason: str | None         # the last failure (or why it failed for good)
    updated: int               # ms
    created: int               # ms

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.pid, self.seq, self.idx)


@dataclass(frozen=True)
class ScheduleOp:
    kind: str                  # spawn | message | assign
    pid: str                   # the process (for spawn: the new process id)
    message_id: str
    item: tuple[ItemMeta, bytes] | None = None
    module: str = ""           # spawn only
    has_crons: bool = False    # spawn only
    exclude: str = ""          # assign only: the legacy `exclude` values (comma-separated), one Exclude tag each


def results_page_query(pid: str, *, after: tuple[int, int] | None, until: tuple[int, int] | None,
                       descending: bool, limit: int, crons_only: bool,
                       skip_errors: bool) -> tuple[str, list[object]]:
    """SQL of a `results` page (legacy cursor bounds on (timestamp, seq)), one row more than `limit` so the
    caller can tell whether there is a next page. Shared by the node's and the bridge's SQLite stores."""
    q = "SELECT * FROM results WHERE pid=?"
    args: list[object] = [pid]
    op_after, op_until = ("<", ">=") if descending else (">", "<=")
    if after is not None:
        q += f" AND (timestamp, seq) {op_after} (?, ?)"
        args += list(after)
    if until is not None:
        q += f" AND (timestamp, seq) {op_until} (?, ?)"
        args += list(until)
    if crons_only:
        q += " AND cron IS NOT NULL"
    if skip_errors:
        q += " AND error=0"
    q += " ORDER BY seq " + ("DESC" if descending else "ASC") + " LIMIT ?"
    args.append(limit + 1)
    return q, args


class Store(abc.ABC):
    # items ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def put_item(self, meta: ItemMeta, raw: bytes) -> bool:
        """Stores an item in its received form (`meta.codec`); False if it was already stored. The data is the
        last `meta.size` bytes of `raw`."""

    @abc.abstractmethod
    def item_meta(self, item_id: str) -> ItemMeta | None: ...

    @abc.abstractmethod
    def item_raw(self, item_id: str) -> bytes | None: ...

    @abc.abstractmethod
    def item_data(self, item_id: str) -> bytes | None: ...

    # processes and the log ------------------------------------------------------------------------
    @abc.abstractmethod
    def spawn(self, meta: ItemMeta, raw: bytes, module: str, now_ms: int, block_height: int,
              build: AssignmentBuilder) -> LogEntry:
        """Stores the process item and schedules it at nonce 0, atomically and durably."""

    @abc.abstractmethod
    def schedule(self, pid: str, message_id: str, now_ms: int, block_height: int, build: AssignmentBuilder,
                 item: tuple[ItemMeta, bytes] | None = None) -> tuple[LogEntry, bool]:
        """Assigns the next nonce (and stores `item` first) durably; (entry, False) if already scheduled."""

    @abc.abstractmethod
    def schedule_batch(self, ops: list[ScheduleOp], now_ms: int, block_height: int,
                       build: AssignmentBuilder) -> list[tuple[LogEntry, bool] | Exception]:
        """Group commit: every op in one durable transaction (one fsync); each op succeeds or fails alone."""

    @abc.abstractmethod
    def process(self, pid: str) -> ProcessRow | None: ...

    @abc.abstractmethod
    def processes_with_crons(self) -> list[str]: ...

    @abc.abstractmethod
    def log_entry(self, pid: str, nonce: int) -> LogEntry | None: ...

    @abc.abstractmethod
    def log_entry_by_message(self, pid: str, message_id: str) -> LogEntry | None: ...

    @abc.abstractmethod
    def log_page(self, pid: str, *, from_nonce: int | None, from_ts: int | None, to_ts: int | None,
                 limit: int) -> tuple[list[LogEntry], bool]: ...

    @abc.abstractmethod
    def advance_time(self, pid: str, now_ms: int) -> int:
        """Moves the process clock to at least now (durably); later messages are never earlier."""

    # results and checkpoints ----------------------------------------------------------------------
    @abc.abstractmethod
    def last_result(self, pid: str) -> ResultRow | None: ...

    def last_result_nonce(self, pid: str) -> int | None:
        """The nonce of the newest stored result of `pid` (None: none), without reading its body."""
        last = self.last_result(pid)
        return None if last is None else last.nonce

    @abc.abstractmethod
    def put_results(self, rows: list[ResultRow], outgoing: dict[int, list[Outgoing]],
                    now_ms: int, block_height: int, build: AssignmentBuilder) -> list[LogEntry]:
        """Stores evaluated results and schedules their outbox effects in one transaction; returns the new
        log entries. Rows already stored are left unchanged (recomputation is deterministic)."""

    @abc.abstractmethod
    def result_by_message(self, pid: str, message_id: str) -> ResultRow | None: ...

    @abc.abstractmethod
    def result_by_seq(self, pid: str, seq: int) -> ResultRow | None: ...

    @abc.abstractmethod
    def results_page(self, pid: str, *, after: tuple[int, int] | None, until: tuple[int, int] | None,
                     descending: bool, limit: int, crons_only: bool,
                     skip_errors: bool) -> tuple[list[ResultRow], bool]:
        """Results ordered by seq; bounds are (timestamp, seq) pairs, `after` exclusive, `until` inclusive."""

    @abc.abstractmethod
    def put_checkpoint(self, cp: Checkpoint, keep: int | None = None) -> None:
        """Stores `cp` and keeps the process's latest `keep` checkpoints (None: the store's setting)."""

    @abc.abstractmethod
    def latest_checkpoint(self, pid: str) -> Checkpoint | None: ...

    # Incremental checkpoints (cu/node/eval/checkpoints.py): a chain of deltas on top of one full checkpoint
    # (`base_seq`, a row of put_checkpoint), each holding only the pages changed since the previous link. A
    # delta row is a Checkpoint whose `snapshot` is the sealed delta; rows of another base are garbage.
    def put_checkpoint_delta(self, cp: Checkpoint, base_seq: int) -> None:
        """Stores the delta `cp` of the chain on full checkpoint `base_seq` and deletes the process's deltas
        on older bases (atomically: one transaction)."""
        raise NotImplementedError(f"{type(self).__name__} stores no incremental checkpoints")

    def checkpoint_deltas(self, pid: str, base_seq: int) -> list[Checkpoint]:
        """The deltas of `pid` on full checkpoint `base_seq`, by seq ascending ([] when there are none)."""
        return []

    @abc.abstractmethod
    def stats(self) -> dict[str, int]: ...

    @abc.abstractmethod
    def flush(self) -> None:
        """Every write queued so far (write-behind results) is in the store when this returns."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def processes_page(self, before: tuple[int, str] | None, limit: int) -> tuple[list[ProcessRow], bool]:
        """Processes by last activity (`last_timestamp`), newest first, after the exclusive bound `before` =
        (last_timestamp, id); (page, whether there are more). Tags are not read (empty)."""


def processes_page_query(before: tuple[int, str] | None, limit: int) -> tuple[str, list[object]]:
    """SQL of a `processes_page` (one row more than `limit`), in ProcessRow field order with empty tags."""
    q = "SELECT id, module, owner, '[]', timestamp, block_height, nonce, last_timestamp FROM processes"
    args: list[object] = []
    if before is not None:
        q += " WHERE (last_timestamp, id) < (?, ?)"
        args += list(before)
    return q + " ORDER BY last_timestamp DESC, id DESC LIMIT ?", [*args, limit + 1]
