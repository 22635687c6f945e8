"""How the HTTP workers reach the evaluator: `EvaluatorClient`, typed methods over one `send(request)`
function, which is either the dispatcher itself (embedded: tests, single process) or a per-thread persistent
Unix-socket connection to the evaluator process (`SocketTransport`; framing in `cu.node.wire`)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cu.node import rpc
from cu.node.errors import Busy, Unavailable, from_kind
from cu.node.store import LogEntry, ResultRow, ScheduleOp
from cu.node.wire import FrameReader, send_frame

Send = Callable[[Any], Any]


class EvaluatorClient:
    def __init__(self, send: Send) -> None:
        self.send = send

    def submit(self, op: ScheduleOp) -> tuple[LogEntry, bool]:
        out: rpc.Scheduled = self.send(rpc.Schedule(op))
        return out.entry, out.fresh

    def result(self, pid: str, message_id: str) -> bytes:
        return self.send(rpc.Result(pid, message_id)).body

    def dry_run(self, pid: str, body: dict[str, Any], to: rpc.At | None = None) -> bytes:
        return self.send(rpc.DryRun(pid, body, to)).body

    def state(self, pid: str, to: rpc.At | None = None) -> rpc.StateReply:
        return self.send(rpc.State(pid, to))

    def state_chunk(self, export: str, offset: int, size: int) -> bytes:
        return self.send(rpc.StateChunk(export, offset, size)).body

    def state_done(self, export: str) -> None:
        self.send(rpc.StateDone(export))

    def cron(self, pid: str) -> None:
        self.send(rpc.Cron(pid))

    def monitor(self, pid: str, on: bool) -> bytes:
        return self.send(rpc.Monitor(pid, on)).body

    def checkpoint(self, pid: str) -> None:
        self.send(rpc.Checkpoint(pid))

    def now(self, pid: str) -> rpc.NowReply:
        return self.send(rpc.Now(pid))

    def results_page(self, pid: str, *, after: rpc.Bound | None, until: rpc.Bound | None, descending: bool,
                     limit: int, crons_only: bool, skip_errors: bool) -> tuple[list[ResultRow], bool]:
        page: rpc.Page = self.send(rpc.ResultsPage(pid, after, until, descending, limit, crons_only, skip_errors))
        return page.rows, page.more

    def flush(self) -> None:
        self.send(rpc.Flush())

    def notify(self, pid: str) -> None:
        self.send(rpc.Notify(pid))

    def metrics(self) -> rpc.MetricsReply:
        return self.send(rpc.Metrics())


def embedded(dispatcher: Any) -> EvaluatorClient:
    """A client calling `dispatcher` (a cu.node.dispatch.Dispatcher) in this process."""
    def send(req: Any) -> Any:
        try:
            return dispatcher.handle(req)
        finally:
            dispatcher.after_reply()
    return EvaluatorClient(send)


class SocketTransport:
    """Per-thread persistent connection to the evaluator process; reconnects once when it was lost."""

    def __init__(self, path: str | Path, connect_timeout_s: float = 10.0, reply_timeout_s: float = 60.0) -> None:
        self.path = str(path)
        self.connect_timeout_s = connect_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self._local = threading.local()

    def _sock(self) -> socket.socket:
        s = getattr(self._local, "sock", None)
        if s is None or getattr(self._local, "pid", None) != os.getpid():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            deadline = time.monotonic() + self.connect_timeout_s
            while True:
                try:
                    s.connect(self.path)
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.monotonic() > deadline:
                        s.close()
                        raise Unavailable("the evaluator is not running") from None
                    time.sleep(0.05)
            s.settimeout(self.reply_timeout_s)
            # replies read through a buffer: length and body in one recv, one GIL hand-off per reply, not two
            self._local.sock, self._local.pid, self._local.reader = s, os.getpid(), FrameReader(s)
        return s

    def _drop(self) -> None:
        s = getattr(self._local, "sock", None)
        if s is not None:
            s.close()
        self._local.sock = self._local.reader = None

    def __call__(self, req: Any) -> Any:
        frame = rpc.encode_request(req)
        # a connection lost before the reply is made again: the evaluator may have been restarted, and a
        # connection accepted by one that was dying (kill -9) is reset too; every request may be sent again
        # (scheduling is idempotent by message id, the rest are reads or re-runnable)
        for attempt in (0, 1, 2):
            if attempt:
                time.sleep(0.05 * attempt)
            s = self._sock()
            try:
                send_frame(s, frame)
                reply = self._local.reader.next()
                if reply is None:
                    raise ConnectionError("evaluator closed the connection")
                break
            except TimeoutError:
                # the evaluator keeps working; this connection is out of step with it now
                self._drop()
                raise Busy(f"the evaluator did not answer within {self.reply_timeout_s:g} s") from None
            except (ConnectionError, OSError):
                self._drop()
                if attempt == 2:
                    raise Unavailable("lost the connection to the evaluator") from None
        ok, *rest = reply
        if not ok:
            kind, message = rest
            raise from_kind(str(kind), str(message))
        return rpc.decode_reply(type(req), rest[0])


def over_socket(path: str | Path, reply_timeout_s: float = 60.0) -> EvaluatorClient:
    return EvaluatorClient(SocketTransport(path, reply_timeout_s=reply_timeout_s))
