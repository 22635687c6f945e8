"""The gunicorn worker class of `aocu serve` (`cu.serve.worker.AocuWorker`): gthread with kept-alive connections
served inline (cu/http/worker.py), and no request thread held by a slow client (issue: slowloris).

gunicorn's gthread worker gives a connection to a pool thread as soon as its first byte arrives, and the thread
then reads the request head and body with blocking reads that have no deadline: a handful of clients sending a
byte every few seconds hold every thread. Here

- the worker's main thread (its poller) reads each request head, and a body of at most BODY_PREREAD bytes with a
  Content-Length (while the worker holds less than POLLER_BUDGET bytes so read), without blocking; a connection
  goes to a pool thread only when that much has arrived. A request not complete within `header_timeout_s` of the
  connection becoming readable (of its accept, for a new one) is answered 408 and closed there, so slow heads and
  slow small bodies wait in the poller, never in a thread;
- what a pool thread still reads from the socket has deadlines: the rest of a head that arrived behind another
  request on the same connection, `header_timeout_s` in all; a larger or chunked body, `header_timeout_s` plus
  the time it takes at MIN_BODY_RATE. Past the deadline the head read answers 408 and closes, and the body read
  raises `ReadTimeout`, which the app answers 408 like any other HTTP error;
- a plain HTTP/1.1 request that has arrived whole (the usual case: the poller read it) is answered by the lean
  path (cu/serve/lean.py) with the environ and the bytes gunicorn would give it, without its parser and Response."""

from __future__ import annotations

import errno
import os
import re
import select
import selectors
import socket
import sys
import time
from collections import deque
from functools import partial
from typing import Any

from gunicorn.http.errors import NoMoreData
from gunicorn.workers.gthread import TConn, ThreadWorker
from werkzeug.exceptions import RequestTimeout

from cu.http.worker import INLINE_WAIT_S, KeepAliveThreadWorker, _readable
from cu.serve import lean

SWITCH_INTERVAL_S = 0.0005
HEAD_END = b"\r\n\r\n"
MAX_HEAD = 64 * 1024            # handed to gunicorn's parser past this (its line/field limits answer 400)
BODY_PREREAD = 1024 * 1024      # bodies up to this size (messages, dry-runs) are read by the poller first
POLLER_BUDGET = 64 * 1024 * 1024   # bytes the poller holds for connections at most (then heads only)
MIN_BODY_RATE = 1024 * 1024     # bytes/s a larger body must average after the first header_timeout_s
# AOCU_LEAN_HTTP=0 sends every request through gunicorn's parser and Response (for measuring, bench/node.py)
LEAN_HTTP = os.environ.get("AOCU_LEAN_HTTP", "1") != "0"
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d{1,12})[ \t]*\r\n", re.IGNORECASE)
_NO_PREREAD = re.compile(rb"\r\n(transfer-encoding|expect):", re.IGNORECASE)
_408_BODY = b'{"error": "request not received in time; closing the connection"}'
_408 = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(_408_BODY), _408_BODY))


class ReadTimeout(TimeoutError, RequestTimeout):
    """A request body that did not arrive in time: an OSError for gunicorn's body drain (which then closes the
    connection), a 408 HTTPException for the Flask app reading it."""

    response = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.description = message


def ready(buf: bytes | bytearray, preread: int = BODY_PREREAD) -> bool:
    """Whether `buf` (what a connection has sent so far) is enough to give the connection to a thread: a whole
    head, plus the body when it has a small Content-Length (not chunked, no Expect: 100-continue)."""
    end = buf.find(HEAD_END)
    if end < 0:
        return len(buf) >= MAX_HEAD
    head = memoryview(buf)[:end + 2].tobytes()
    m = _LENGTH.search(head)
    if m is None or _NO_PREREAD.search(head) or int(m.group(1)) > preread:
        return True
    return len(buf) >= end + 4 + int(m.group(1))


class _DeadlineSocket:
    """The parser's view of a client socket: recv() bounded by the current request's head or body deadline."""

    def __init__(self, sock: socket.socket, limit_s: float) -> None:
        self._sock = sock
        self.limit_s = limit_s
        self.phase = "head"
        self.start = time.monotonic()
        self.got = 0

    def arm(self, phase: str) -> None:
        self.phase, self.start, self.got = phase, time.monotonic(), 0

    def _remaining(self) -> float:
        allowed = self.limit_s + (self.got / MIN_BODY_RATE if self.phase == "body" else 0.0)
        return self.start + allowed - time.monotonic()

    def recv(self, size: int) -> bytes:
        remaining = self._remaining()
        prior = self._sock.gettimeout()
        try:
            if remaining <= 0:
                raise TimeoutError
            self._sock.settimeout(remaining if prior is None else min(prior, remaining))
            data = self._sock.recv(size)
        except TimeoutError:
            if self.phase == "head":
                _send_408(self._sock)
                raise NoMoreData(b"") from None      # gunicorn closes the connection quietly
            raise ReadTimeout(f"request body not received within {self.limit_s:g} s (at least "
                              f"{MIN_BODY_RATE // 1024} KiB/s after that)") from None
        finally:
            try:
                self._sock.settimeout(prior)
            except OSError:
                pass
        self.got += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _send_408(sock: socket.socket) -> None:
    try:
        sock.send(_408, socket.MSG_DONTWAIT)
    except OSError:
        pass


class _Conn(TConn):
    prefix = b""                   # bytes the poller read before a thread took the connection
    deadline_sock: _DeadlineSocket | None = None
    head_deadline = 0.0
    head: bytearray | None = None
    inline_poll: Any = None        # select.poll of the socket, for the inline wait of the next request

    def init(self) -> None:
        fresh = self.parser is None
        super().init()
        if fresh and not self.is_http2 and hasattr(self.parser.unreader, "sock"):
            self.deadline_sock = _DeadlineSocket(self.parser.unreader.sock, AocuWorker.header_timeout_s)
            self.parser.unreader.sock = self.deadline_sock
        if self.prefix:
            self.parser.unreader.unread(self.prefix)
            self.prefix = b""


class AocuWorker(KeepAliveThreadWorker):
    header_timeout_s = 10.0        # set by cu/serve/gunicorn_app.py from --header-timeout before the fork

    def init_process(self) -> None:
        # a thread busy in Python (a 32 MiB chunked body, a burst of refused dry-runs) keeps the GIL for the
        # switch interval each time: at the default 5 ms, the poller and a /health thread each wait for it
        # several times per request. The evaluator process does the same (cu/node/service.py).
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        _freeze_settings(self.cfg)
        self.lean = lean.LeanHttp(self) if LEAN_HTTP and lean.usable(self) else None
        super().init_process()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heading: deque[_Conn] = deque()     # connections whose head the poller is reading, oldest first
        self.held = 0                            # bytes of their requests the poller holds
        self.lean: lean.LeanHttp | None = None     # plain requests already read whole (cu/serve/lean.py)

    # -- the poller side (main thread) ----------------------------------------------------------------------
    def accept(self, listener: Any) -> None:
        if self.cfg.is_ssl:
            return super().accept(listener)
        try:
            sock, addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self._await_head(_Conn(self.cfg, sock, addr, listener.getsockname()), b"")

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        if not isinstance(conn, _Conn):
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_head(conn, b"")

    def _await_head(self, conn: _Conn, already: bytes) -> None:
        conn.sock.setblocking(False)
        conn.head = bytearray(already)
        conn.head_deadline = time.monotonic() + self.header_timeout_s
        if already and ready(conn.head):
            self._dispatch(conn)
            return
        self.heading.append(conn)
        self.held += len(already)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_data, conn))

    def _on_head_data(self, conn: _Conn, _fileobj: Any) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        assert conn.head is not None
        if data:
            conn.head += data
            self.held += len(data)
            if not ready(conn.head, BODY_PREREAD if self.held < POLLER_BUDGET else 0):
                return
        self.poller.unregister(conn.sock)
        self.heading.remove(conn)
        self.held -= len(conn.head)
        if data:
            self._dispatch(conn)
        else:                       # closed by the client before a whole request
            self.nr_conns -= 1
            conn.close()

    def _dispatch(self, conn: _Conn) -> None:
        assert conn.head is not None
        got, conn.head = bytes(conn.head), None
        conn.data_ready = True
        if conn.parser is not None:
            conn.parser.unreader.unread(got)
        else:
            conn.prefix = got
        self.enqueue_req(conn)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self.heading and self.heading[0].head_deadline <= now:
            conn = self.heading.popleft()
            self.held -= len(conn.head or b"")
            try:
                self.poller.unregister(conn.sock)
            except (OSError, KeyError, ValueError):
                pass
            _send_408(conn.sock)
            self.nr_conns -= 1
            conn.close()

    def finish_request(self, conn: Any, fs: Any) -> None:
        # a pipelined partial head behind the last response waits in the poller too
        if (isinstance(conn, _Conn) and self.alive and not fs.cancelled() and fs.exception() is None
                and fs.result() is True and conn.parser is not None):
            pending = conn.parser.unreader.buf.getvalue()
            if pending and not ready(pending):
                conn.parser.unreader.take_buffered()
                self._await_head(conn, pending)
                return
        super().finish_request(conn, fs)

    # -- the pool-thread side ------------------------------------------------------------------------------
    def handle(self, conn: Any) -> Any:
        keep = self._handle_one(conn)
        while keep is True and self.alive:
            buf = conn.parser.unreader.buf.getvalue()
            if not buf:
                if not _wait_readable(conn, INLINE_WAIT_S):
                    break          # nothing: back to the poller
                if self.lean is None:
                    buf = _peek(conn.sock) or b"\r\n\r\n"     # (end of stream: gunicorn's parser closes)
                else:
                    # taken now rather than peeked: the lean path parses these bytes, and a partial request goes
                    # to the poller with them (finish_request)
                    buf = _recv_now(conn.sock)
                    if not buf:
                        break
                    conn.parser.unreader.unread(buf)
            if not ready(buf):
                break              # only part of a request: finish_request hands it to the poller
            keep = self._handle_one(conn)
        return keep

    def _handle_one(self, conn: Any) -> Any:
        if self.lean is not None and isinstance(conn, _Conn):
            conn.sock.setblocking(True)
            conn.init()
            if not conn.is_http2:
                keep = self.lean.serve(conn)
                if keep is not None:
                    return keep
        if isinstance(conn, _Conn) and conn.deadline_sock is not None:
            conn.deadline_sock.arm("head")
        return ThreadWorker.handle(self, conn)

    def handle_request(self, req: Any, conn: Any) -> Any:
        if isinstance(conn, _Conn) and conn.deadline_sock is not None:
            conn.deadline_sock.arm("body")
        return super().handle_request(req, conn)


def _freeze_settings(cfg: Any) -> None:
    """gunicorn reads each setting through Config.__getattr__ (about 1 us, some 20 times a request); a worker
    never changes them after the fork, so each becomes a plain attribute of its Config. Settings that Config
    computes in a property stay properties (a property wins over an instance attribute)."""
    cfg.__dict__.update({name: setting.get() for name, setting in cfg.settings.items()})


def _wait_readable(conn: Any, timeout_s: float) -> bool:
    """Whether `conn`'s socket becomes readable within `timeout_s`, through a poll object kept on the connection
    (made and registered once, not at every request)."""
    poller = getattr(conn, "inline_poll", None)
    if poller is None:
        if not isinstance(conn, _Conn):
            return _readable(conn.sock, timeout_s)
        poller = conn.inline_poll = select.poll()
        poller.register(conn.sock, select.POLLIN)
    try:
        return bool(poller.poll(timeout_s * 1000))
    except OSError:
        return False


def _recv_now(sock: socket.socket) -> bytes:
    try:
        return sock.recv(MAX_HEAD, socket.MSG_DONTWAIT)
    except OSError:
        return b""


def _peek(sock: socket.socket) -> bytes:
    try:
        return sock.recv(MAX_HEAD, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:
        return b""
