"""Evaluator shards (`aocu serve --evaluators N`): N evaluator processes per node, each owning the processes
whose id hashes to it, so every core evaluates (one GIL per process).

- Assignment: rendezvous hashing (highest blake2b(shard, pid) wins). It depends only on the process id and N,
  so the workers and every evaluator agree without talking, and changing N moves only the processes whose top
  choice changed (~1/N of them when one shard is added): the others keep their warm state and checkpoints.
- Sockets and locks: shard 0 keeps `DATA-DIR/evaluator.sock` and `evaluator.lock` (a one-shard node is what it
  always was); shard i > 0 serves `evaluator-i.sock` and holds `evaluator-i.lock`.
- Workers route each request to the owning shard (`ShardedTransport`); node-wide requests (Flush, Metrics,
  Status) go to every shard and their replies are merged; a large `/state` export's token names its shard.
- Shards share the store (one SQLite file in WAL mode: every write is a transaction, so a message one shard's
  process sends to another shard's process is scheduled in the sender's result transaction, exactly once, as
  on a one-shard node). The receiving shard is then told (`Peers.notify`); a shard that is down misses
  nothing: at start it cranks every process it owns that has unevaluated messages.
- Node-wide background work (the outbox deliverer, retention) runs in shard 0; other shards wake its
  deliverer when they commit pending outbox entries (`Peers.wake_deliverer`)."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import queue
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from cu.node import rpc
from cu.node.client import EvaluatorClient, SocketTransport
from cu.node.errors import CoreError, Unavailable

log = logging.getLogger("aocu.evaluator")

LOCK_FILE = "evaluator.lock"
NOTIFY_CONNECT_S = 0.5      # a shard telling another: short, a shard that is down catches up at its start
NOTIFY_REPLY_S = 5.0


class WriteGate:
    """Orders the shards' group commits on the shared SQLite store with a blocking flock on DATA-DIR/write.lock:
    a shard waiting for another's commit wakes the moment it ends, where SQLite's busy handler would sleep 1, 2,
    5, 10 ms... between retries. Writers outside the evaluators (module uploads) still meet the busy timeout."""

    def __init__(self, data_dir: str | Path) -> None:
        self._fd = os.open(Path(data_dir) / "write.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)     # releases the GIL while it waits

    def __exit__(self, *_exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


@lru_cache(maxsize=65536)
def shard_of(pid: str, n: int) -> int:
    """The shard (0..n-1) that owns process `pid` among `n` (rendezvous hashing)."""
    if n <= 1:
        return 0
    key = pid.encode("utf-8", "surrogatepass")
    return max(range(n), key=lambda i: hashlib.blake2b(key, digest_size=8, salt=i.to_bytes(8, "big")).digest())


def socket_for(socket_path: str | Path, shard: int) -> Path:
    """Shard `shard`'s socket: the node's socket path itself for shard 0, `<stem>-<shard><suffix>` otherwise."""
    p = Path(socket_path)
    return p if shard == 0 else p.with_name(f"{p.stem}-{shard}{p.suffix}")


def lock_file(data_dir: str | Path, shard: int) -> Path:
    """The lock shard `shard` holds while it serves (shard 0: DATA-DIR/evaluator.lock, as a one-shard node)."""
    return socket_for(Path(data_dir) / LOCK_FILE, shard)


def lock_files(data_dir: str | Path) -> list[Path]:
    """Every shard lock file present in the data dir (also those of an earlier run with more shards)."""
    d = Path(data_dir)
    return sorted({d / LOCK_FILE, *d.glob("evaluator-*.lock")})


def request_pid(req: Any) -> str | None:
    """The process a request is about (None: node-wide or export-addressed)."""
    if isinstance(req, rpc.Schedule):
        return req.op.pid
    pid = getattr(req, "pid", None)
    return pid if isinstance(pid, str) else None


class Ownership:
    """What one evaluator shard owns."""

    def __init__(self, shards: int, shard: int) -> None:
        self.shards, self.shard = shards, shard

    def __call__(self, pid: str) -> bool:
        return self.shards <= 1 or shard_of(pid, self.shards) == self.shard

    @property
    def leader(self) -> bool:
        """The shard that runs the node-wide background work (outbox deliverer, retention)."""
        return self.shard == 0


class Peers:
    """One shard's messages to the other shards of its node, sent on a thread of their own (never on a thread
    evaluating or committing): `notify(pid)` makes the owner crank `pid` (it received outbox messages), and
    `wake_deliverer()` wakes shard 0's deliverer. Best effort by design: what they announce is in the store
    already, and a shard (re)starting scans for it."""

    def __init__(self, socket_path: str | Path, shards: int, shard: int) -> None:
        self.shards, self.shard = shards, shard
        self._clients = [EvaluatorClient(SocketTransport(socket_for(socket_path, i), NOTIFY_CONNECT_S,
                                                         NOTIFY_REPLY_S)) for i in range(shards)]
        self._q: queue.Queue[tuple[int, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        if self._thread is None and self.shards > 1:
            self._thread = threading.Thread(target=self._run, name="aocu-shard-peers", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def notify(self, pid: str) -> None:
        self._q.put((shard_of(pid, self.shards), rpc.Notify(pid)))

    def wake_deliverer(self) -> None:
        self._q.put((0, rpc.WakeOutbox()))

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            shard, req = item
            try:
                self._clients[shard].send(req)
                self.sent += 1
            except CoreError as exc:
                self.failed += 1
                log.info("shard %d could not tell shard %d (%s): it catches up when it starts", self.shard, shard,
                         exc.message)


# the workers' side ------------------------------------------------------------------------------------------
class ShardedTransport:
    """`EvaluatorClient`'s send over N shard sockets: a request about a process goes to its owner; Flush goes to
    every shard; Metrics and Status are asked of every shard and merged (an unreachable shard makes them fail
    with its reason, so `/ready` sees it; `each` gives per-shard answers)."""

    def __init__(self, socket_path: str | Path, shards: int, *, connect_timeout_s: float = 10.0,
                 reply_timeout_s: float = 60.0) -> None:
        self.shards = shards
        self.transports = [SocketTransport(socket_for(socket_path, i), connect_timeout_s, reply_timeout_s)
                           for i in range(shards)]

    def __call__(self, req: Any) -> Any:
        pid = request_pid(req)
        if pid is not None:
            shard = shard_of(pid, self.shards)
            reply = self.transports[shard](req)
            if isinstance(reply, rpc.StateReply) and reply.export is not None and self.shards > 1:
                return rpc.StateReply(reply.body, reply.headers, reply.length, reply.digest,
                                      f"{shard}.{reply.export}")
            return reply
        if isinstance(req, (rpc.StateChunk, rpc.StateDone)):
            shard, export = self._export(req.export)
            inner = rpc.StateChunk(export, req.offset, req.size) if isinstance(req, rpc.StateChunk) \
                else rpc.StateDone(export)
            return self.transports[shard](inner)
        if isinstance(req, rpc.Status):
            return self._status(req)
        replies = self.each(req)
        for i, r in enumerate(replies):
            if isinstance(r, CoreError):
                raise type(r)(self._which(i, r.message))
        if isinstance(req, rpc.Metrics):
            return merge_metrics([r for r in replies if isinstance(r, rpc.MetricsReply)])
        return replies[0]

    def each(self, req: Any) -> list[Any]:
        """`req` sent to every shard in turn: each one's reply, or the CoreError it failed with."""
        out: list[Any] = []
        for t in self.transports:
            try:
                out.append(t(req))
            except CoreError as exc:
                out.append(exc)
        return out

    def _which(self, shard: int, message: str) -> str:
        return message if self.shards == 1 else f"shard {shard} of {self.shards}: {message}"

    def _export(self, token: str) -> tuple[int, str]:
        if self.shards == 1:
            return 0, token
        head, sep, rest = token.partition(".")
        if not sep or not head.isdigit() or int(head) >= self.shards:
            raise Unavailable(f"state export {token[:16]!r} names no evaluator shard")
        return int(head), rest

    def _status(self, req: rpc.Status) -> rpc.StatusReply:
        mine: list[list[str]] = [[] for _ in range(self.shards)]
        for pid in req.pids:
            mine[shard_of(pid, self.shards)].append(pid)
        replies: list[rpc.StatusReply] = []
        for i, t in enumerate(self.transports):
            try:
                replies.append(t(rpc.Status(mine[i], req.before, req.limit)))
            except CoreError as exc:
                raise type(exc)(self._which(i, exc.message)) from None
        return merge_status(replies, req.limit)


def merge_metrics(replies: list[rpc.MetricsReply]) -> rpc.MetricsReply:
    """The node's evaluator figures: every shard's counters and gauges summed."""
    total: dict[str, float] = {}
    for r in replies:
        for k, v in r.metrics.items():
            total[k] = total.get(k, 0.0) + v
    return rpc.MetricsReply(total, sum(r.warm for r in replies), sum(r.queued for r in replies))


def merge_status(replies: list[rpc.StatusReply], limit: int) -> rpc.StatusReply:
    if len(replies) == 1:
        return replies[0]
    merged = merge_metrics([rpc.MetricsReply(r.metrics, r.warm_count, r.queued) for r in replies])
    bridged: dict[str, rpc.BridgedProcess] = {}
    for r in replies:
        for b in r.bridged:       # every shard reads the bridge's store; live flags come from the one running it
            old = bridged.get(b.pid)
            if old is None or (b.warm or b.evaluating) and not (old.warm or old.evaluating):
                bridged[b.pid] = b
    rows = sorted(bridged.values(), key=lambda b: (b.last_ts, b.pid), reverse=True)
    return rpc.StatusReply(metrics=merged.metrics, uptime_s=min(r.uptime_s for r in replies), queued=merged.queued,
                           warm_count=merged.warm, warm=[p for r in replies for p in r.warm],
                           bridge=next((r.bridge for r in replies if r.bridge), {}),
                           bridged=rows[:limit] if limit > 0 else [],
                           bridged_more=any(r.bridged_more for r in replies) or len(rows) > limit)


def client_for(socket_path: str | Path, shards: int, *, connect_timeout_s: float = 10.0,
               reply_timeout_s: float = 60.0) -> EvaluatorClient:
    """The workers' evaluator client of a node with `shards` evaluator processes."""
    return EvaluatorClient(ShardedTransport(socket_path, shards, connect_timeout_s=connect_timeout_s,
                                            reply_timeout_s=reply_timeout_s))


def wrong_shard(own: Ownership, req: Any) -> str | None:
    """Why this shard must not serve `req` (None: it may): a request about a process another shard owns would
    give the process two warm instances evaluating it at once."""
    pid = request_pid(req)
    if pid is None or own(pid):
        return None
    return (f"process {pid} belongs to evaluator shard {shard_of(pid, own.shards)} of {own.shards}, "
            f"not {own.shard}")

