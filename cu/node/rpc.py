"""The evaluator RPC: one typed protocol between the HTTP workers and the evaluator process.

Each request is a frozen dataclass naming its reply type; requests and replies cross the Unix socket as
msgpack arrays built from the dataclasses' fields (`encode`/`decode`, derived once per type from the type
hints), and in-process (embedded) calls pass the objects themselves. Errors travel as their domain kind
(`cu.node.errors`), never as an HTTP status."""

from __future__ import annotations

import dataclasses
import operator
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from cu.node.store import LogEntry, ResultRow, ScheduleOp

R = TypeVar("R")


class Request(Generic[R]):
    """Base of every request; `reply` is the reply dataclass the dispatcher answers it with."""

    reply: ClassVar[type]


# replies ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class Body:
    body: bytes


@dataclass(frozen=True)
class Scheduled:
    entry: LogEntry
    fresh: bool           # False: the message was scheduled before (duplicate post); `entry` is the original


@dataclass(frozen=True)
class StateReply:
    body: bytes                    # the whole state, or b"" when it is exported (read it with StateChunk)
    headers: dict[str, str]
    length: int = 0
    digest: bytes = b""            # SHA-256 of the whole state
    export: str | None = None      # a state too large for one frame: its download token (cu/node/eval/exports.py)


@dataclass(frozen=True)
class MetricsReply:
    metrics: dict[str, float]
    warm: int
    queued: int


@dataclass(frozen=True)
class LastResult:
    slot: int
    cron: str | None
    message: str | None
    body: str


@dataclass(frozen=True)
class NowReply:
    slot: int
    timestamp: int
    block_height: int
    cache: dict[str, Any] | None       # None: the patch@1.0 cache cannot be known (see Evaluator.now)
    result: LastResult | None


@dataclass(frozen=True)
class Page:
    rows: list[ResultRow]
    more: bool


@dataclass(frozen=True)
class BridgedProcess:
    """A process computed by the legacynet bridge, as the status page and `GET /processes` list it."""
    pid: str
    module: str
    slot: int             # last scheduled nonce consumed (-1: none yet)
    evaluated: int        # results evaluated (messages and crons)
    last_ts: int          # ms: timestamp of the last evaluated entry (0: none)
    warm: bool
    evaluating: bool      # an evaluation (replay) of it is running now; `slot`/`evaluated` are its live position


@dataclass(frozen=True)
class StatusReply:
    metrics: dict[str, float]
    uptime_s: float       # since the evaluator process started
    queued: int
    warm_count: int
    warm: list[str]       # of the local pids asked about, the warm ones
    bridge: dict[str, Any]            # {} without a bridge; else counts and settings (cu/node/status.py)
    bridged: list[BridgedProcess]
    bridged_more: bool


# requests --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule(Request[Scheduled]):
    op: ScheduleOp
    reply: ClassVar[type] = Scheduled


@dataclass(frozen=True)
class Result(Request[Body]):
    """The result of a scheduled message (evaluating up to it first)."""
    pid: str
    message_id: str
    reply: ClassVar[type] = Body


@dataclass(frozen=True)
class At:
    """A point in a process's history (legacy `to=`): a millisecond timestamp (every scheduled message at or before
    it and the crons due before it), or a scheduled message's id (up to and including that message)."""
    timestamp: int | None = None
    message_id: str | None = None


@dataclass(frozen=True)
class DryRun(Request[Body]):
    pid: str
    body: dict[str, Any]
    to: At | None = None           # `?to=`: against the state at that point instead of the latest
    reply: ClassVar[type] = Body


@dataclass(frozen=True)
class State(Request[StateReply]):
    pid: str
    to: At | None = None
    reply: ClassVar[type] = StateReply


@dataclass(frozen=True)
class StateChunk(Request[Body]):
    """Bytes of an exported state from `offset` (at most `size`, and at most the evaluator's chunk size)."""
    export: str
    offset: int
    size: int
    reply: ClassVar[type] = Body


@dataclass(frozen=True)
class StateDone(Request[Done]):
    """The worker gives up an exported state before reading it to the end."""
    export: str
    reply: ClassVar[type] = Done


@dataclass(frozen=True)
class Cron(Request[Done]):
    """Evaluate the process up to now, crons included."""
    pid: str
    reply: ClassVar[type] = Done


@dataclass(frozen=True)
class Checkpoint(Request[Done]):
    pid: str
    reply: ClassVar[type] = Done


@dataclass(frozen=True)
class Now(Request[NowReply]):
    pid: str
    reply: ClassVar[type] = NowReply


@dataclass(frozen=True)
class Bound:
    """A `/results` page bound as the client gave it: a timestamp, or a cursor's (timestamp, ordinate, cron)."""
    timestamp: int
    ordinate: int | None = None
    cron: str | None = None


@dataclass(frozen=True)
class ResultsPage(Request[Page]):
    pid: str
    after: Bound | None
    until: Bound | None
    descending: bool
    limit: int
    crons_only: bool
    skip_errors: bool
    reply: ClassVar[type] = Page


@dataclass(frozen=True)
class Flush(Request[Done]):
    """Returns once every write queued so far (write-behind results) is in the store."""
    reply: ClassVar[type] = Done


@dataclass(frozen=True)
class Notify(Request[Done]):
    pid: str
    reply: ClassVar[type] = Done


@dataclass(frozen=True)
class Monitor(Request[Body]):
    """Start (`on`) or stop a cron monitor of `pid` (legacy MU `POST|DELETE /monitor/{pid}`); the reply body is
    JSON {"monitored": bool, "changed": bool}."""
    pid: str
    on: bool
    reply: ClassVar[type] = Body


@dataclass(frozen=True)
class Metrics(Request[MetricsReply]):
    reply: ClassVar[type] = MetricsReply


@dataclass(frozen=True)
class Status(Request[StatusReply]):
    """Evaluator facts for the status page and `GET /processes`: which of `pids` are warm, and a page of bridged
    processes newest activity first (`before`: exclusive (last_ts, pid) bound; `limit` 0: none)."""
    pids: list[str]
    before: tuple[int, str] | None
    limit: int
    reply: ClassVar[type] = StatusReply


@dataclass(frozen=True)
class WakeOutbox(Request[Done]):
    """Another evaluator shard committed pending outbox entries: the deliverer (shard 0's) looks now."""
    reply: ClassVar[type] = Done


REQUESTS: tuple[type, ...] = (Schedule, Result, DryRun, State, StateChunk, StateDone, Cron, Checkpoint, Now,
                              ResultsPage, Flush, Notify, Metrics, Status, WakeOutbox, Monitor)
_BY_NAME: dict[str, type] = {cls.__name__: cls for cls in REQUESTS}


# wire codec ------------------------------------------------------------------------------------------------
Enc = Callable[[Any], Any]
Dec = Callable[[Any], Any]


def _identity(v: Any) -> Any:
    return v


@dataclass
class _Codecs:
    enc: dict[Any, Enc] = field(default_factory=dict)
    dec: dict[Any, Dec] = field(default_factory=dict)


_CODECS = _Codecs()
_SCALARS = (int, str, bool, float)


def _codec(tp: Any) -> tuple[Enc, Dec]:
    """(encoder, decoder) between a value of type `tp` and its msgpack form."""
    got = _CODECS.enc.get(tp)
    if got is not None:
        return got, _CODECS.dec[tp]
    enc, dec = _build(tp)
    _CODECS.enc[tp], _CODECS.dec[tp] = enc, dec
    return enc, dec


def _build(tp: Any) -> tuple[Enc, Dec]:
    if tp is Any or tp in _SCALARS or tp is type(None):
        return _identity, _identity
    if tp is bytes:
        return _identity, bytes
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union {tp}")
        e, d = _codec(inner[0])
        if e is _identity and d is _identity:
            return _identity, _identity         # None passes through as it is
        return (lambda v: None if v is None else e(v)), (lambda v: None if v is None else d(v))
    if origin is list:
        e, d = _codec(args[0])
        if e is _identity and d is _identity:
            return _identity, list
        return (lambda v: [e(x) for x in v]), (lambda v: [d(x) for x in v])
    if origin is tuple:
        pairs = [_codec(a) for a in args]
        if all(pe is _identity and pd is _identity for pe, pd in pairs):
            n = len(pairs)

            def tup(v: Any) -> tuple:
                if len(v) != n:
                    raise ValueError(f"expected {n} values, got {len(v)}")
                return tuple(v)
            return list, tup
        return (lambda v: [pe(x) for (pe, _), x in zip(pairs, v, strict=True)],
                lambda v: tuple(pd(x) for (_, pd), x in zip(pairs, v, strict=True)))
    if origin is dict:
        return _identity, dict
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        parts = [(n, *_codec(hints[n])) for n in names]
        # the hot requests and replies are mostly plain fields: only the others are converted, field by field
        encs = [(i, e) for i, (_, e, _) in enumerate(parts) if e is not _identity]
        decs = [(i, d) for i, (_, _, d) in enumerate(parts) if d is not _identity]
        get = operator.attrgetter(*names) if len(names) > 1 else (lambda v: (getattr(v, names[0]),)) if names \
            else (lambda v: ())
        count = len(names)

        def enc(v: Any) -> list[Any]:
            out = list(get(v))
            for i, e in encs:
                out[i] = e(out[i])
            return out

        def dec(v: list[Any]) -> Any:
            if len(v) != count:
                raise ValueError(f"{tp.__name__}: expected {count} fields, got {len(v)}")
            if decs:
                v = list(v)
                for i, d in decs:
                    v[i] = d(v[i])
            return tp(*v)
        return enc, dec
    raise TypeError(f"no wire form for {tp!r}")


def encode_request(req: Any) -> list[Any]:
    return [type(req).__name__, _codec(type(req))[0](req)]


def decode_request(wire: Any) -> Any:
    try:
        name, body = wire
        cls = _BY_NAME[name]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"unknown evaluator request {str(wire)[:80]!r}") from None
    return _codec(cls)[1](body)


def encode_reply(reply: Any) -> Any:
    return _codec(type(reply))[0](reply)


def decode_reply(req_type: type, wire: Any) -> Any:
    return _codec(req_type.reply)[1](wire)
