"""The evaluator's RPC server (cu/node/service.py): one thread reads every worker connection through a selector
and answers cheap requests itself (scheduling, results of warm processes, flushes), so a message->result round
trip costs no thread hand-off in the evaluator. Requests that may be slow (cold restores, dry-runs, state
exports, crons, checkpoints, pages) go to a pool, whose thread answers on that connection.

A request answered inline that turns out slow (a runaway message, a stalled disk) must not hold up the others:
a watchdog sees the reading thread busy on one request for TAKEOVER_S and starts a new reading thread; the old
one finishes its request, answers it and ends. Each connection carries one request at a time (the client waits
for each reply), so a connection is not read while its request is being answered and replies keep their order."""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cu.node import rpc, shards
from cu.node.dispatch import Dispatcher
from cu.node.errors import CoreError, Unavailable
from cu.node.wire import SMALL_FRAME, FrameBuffer, pack_frame

log = logging.getLogger("aocu.evaluator")

TAKEOVER_S = 0.025      # an inline request busy this long (up to twice this) gets the reading thread replaced
WATCH_PARK_S = 1.0      # no inline request this long: the watchdog sleeps until the next one (an idle node rests)
POOL_THREADS = 256      # at most one request per connection is in the pool, so this bounds nothing in practice
SEND_TIMEOUT_S = 60.0   # a reply the worker does not take within this (it timed out and went away)


class _Conn:
    """A worker connection. `busy`: its request is being answered (its next one is only buffered meanwhile);
    `gone`: closed by the peer, or a reply could not be sent. Both are changed by the leading reading thread
    only (a pool thread sets `gone` before handing the connection back), so only it closes the socket."""

    __slots__ = ("sock", "frames", "busy", "gone")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = FrameBuffer()
        self.busy = False
        self.gone = False


class RpcServer:
    """Serves the evaluator RPC on the Unix socket `path` (already bound by the caller's `listener`)."""

    def __init__(self, listener: socket.socket, dispatcher: Dispatcher,
                 owns: Callable[[str], bool] | None = None) -> None:
        self.dispatcher = dispatcher
        self.owns = owns if owns is not None else dispatcher.core.owns
        self.listener = listener
        listener.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)     # a full wake buffer already means a wake is pending
        self._sel.register(listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._rearm: deque[_Conn] = deque()      # connections whose request was answered off the leading thread
        self._ready: deque[_Conn] = deque()      # connections with a whole request already buffered
        self._conns: set[_Conn] = set()
        self._lock = threading.Lock()
        self._gen = 0                            # which reading thread leads (a takeover starts the next)
        self._busy: tuple[int, float] | None = None     # (generation, since) of an inline request
        self._last_inline = 0.0                  # when the latest inline request started
        self._watch_parked = False               # the watchdog waits for _watch_wake (both under _lock)
        self._watch_wake = threading.Event()
        self._stopped = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="aocu-rpc")
        self.takeovers = 0

    # the reading thread --------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        threading.Thread(target=self._watch, name="aocu-rpc-watch", daemon=True).start()
        self._read_loop(0)
        self._stopped.wait()

    def _leads(self, gen: int) -> bool:
        return self._gen == gen and not self._stopped.is_set()

    def _read_loop(self, gen: int) -> None:
        while self._leads(gen):
            while self._ready and self._leads(gen):
                self._next_request(self._ready.popleft(), gen)
            if not self._leads(gen):
                return
            for key, _ in self._sel.select(0.5):
                if not self._leads(gen):
                    return              # the new reading thread sees the rest (the selector is level-triggered)
                what = key.data
                if what == "accept":
                    self._accept()
                elif what == "wake":
                    self._drain_wake()
                else:
                    self._read(what, gen)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        # blocking, no Python timeout (that would poll before every recv and send); reads happen only when the
        # selector says readable, and a reply the worker does not take fails after SEND_TIMEOUT_S (SO_SNDTIMEO)
        sock.setblocking(True)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(SEND_TIMEOUT_S), 0))
        conn = _Conn(sock)
        self._conns.add(conn)
        self._sel.register(sock, selectors.EVENT_READ, conn)   # for good: readable is checked, not re-armed

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while self._rearm:
            self._done(self._rearm.popleft())

    def _done(self, conn: _Conn) -> None:
        """A connection's request was answered: its next request may be buffered already."""
        conn.busy = False
        if conn.gone:
            self._close(conn)
        elif conn.frames.ready():
            self._ready.append(conn)

    def _read(self, conn: _Conn, gen: int) -> None:
        try:
            data = conn.sock.recv(conn.frames.want())
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        try:
            if not data:
                raise ConnectionError("closed by the worker")
            conn.frames.feed(data)
        except ConnectionError:         # closed, or a length over MAX_FRAME (not our client)
            conn.gone = True
            self._unregister(conn)
            if not conn.busy:
                self._close(conn)       # else when its request is answered: the socket is in use
            return
        if not conn.busy and conn.frames.ready():
            self._next_request(conn, gen)

    def _unregister(self, conn: _Conn) -> None:
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass

    def _close(self, conn: _Conn) -> None:
        self._unregister(conn)
        self._conns.discard(conn)
        try:
            conn.sock.close()
        except OSError:
            pass

    def _next_request(self, conn: _Conn, gen: int) -> None:
        """Answers the connection's buffered request inline, or hands it to the pool."""
        conn.busy = True
        try:
            req = rpc.decode_request(conn.frames.take())
        except Exception as exc:  # noqa: BLE001 - a request that does not decode is answered, as before
            self._reply_inline(conn, [False, "internal", f"evaluation failed: {exc}"], gen)
            return
        if not self.dispatcher.inline(req):
            self._pool.submit(self._pooled, conn, req)
            return
        with self._lock:
            self._last_inline = time.monotonic()
            self._busy = (gen, self._last_inline)
            if self._watch_parked:
                self._watch_parked = False
                self._watch_wake.set()
        t0 = time.thread_time()
        reply = self._answer(req)
        if time.thread_time() - t0 >= TAKEOVER_S:
            # its process's next requests go to the pool for a while (CPU time: not for waiting on a busy machine)
            self.dispatcher.was_slow(req)
        self._reply_inline(conn, reply, gen)

    def _reply_inline(self, conn: _Conn, reply: list[Any], gen: int) -> None:
        data = self._pack(reply)
        if len(data) > SMALL_FRAME + 4:
            # a large reply may wait for the worker to read it: sent by the pool, off the reading thread
            with self._lock:
                self._busy = None
            self._pool.submit(self._send_and_rearm, conn, data)
            return
        conn.gone = not self._send(conn, data)
        with self._lock:
            self._busy = None
            leads = self._gen == gen
        if leads:
            self._done(conn)
        else:
            self._rearm_later(conn)         # taken over meanwhile: the leading reading thread takes it back

    # the pool ---------------------------------------------------------------------------------------------
    def _pooled(self, conn: _Conn, req: Any) -> None:
        self._send_and_rearm(conn, self._pack(self._answer(req)))

    def _send_and_rearm(self, conn: _Conn, data: bytes) -> None:
        conn.gone = not self._send(conn, data)
        self._rearm_later(conn)

    def _rearm_later(self, conn: _Conn) -> None:
        self._rearm.append(conn)
        try:
            self._wake_w.send(b"\0")
        except OSError:     # full (a wake is pending anyway) or closed at shutdown
            pass

    # answering ----------------------------------------------------------------------------------------
    def _answer(self, req: Any) -> list[Any]:
        try:
            wrong = shards.wrong_shard(self.owns, req)
            if wrong is not None:
                raise Unavailable(wrong)
            return [True, rpc.encode_reply(self.dispatcher.handle(req))]
        except CoreError as exc:
            return [False, exc.kind, exc.message]
        except Exception as exc:  # noqa: BLE001 - report, keep serving other requests
            log.exception("evaluator operation failed")
            return [False, "internal", f"evaluation failed: {exc}"]

    @staticmethod
    def _pack(reply: list[Any]) -> bytes:
        try:
            return pack_frame(reply)
        except ValueError as exc:      # a reply over the frame limit: say so instead of dropping it
            return pack_frame([False, "limit_exceeded", str(exc)])

    def _send(self, conn: _Conn, data: bytes) -> bool:
        try:
            conn.sock.sendall(data)
            return True
        except OSError:
            return False
        finally:
            self.dispatcher.after_reply()

    # the watchdog ------------------------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stopped.wait(TAKEOVER_S):
            with self._lock:
                busy, now = self._busy, time.monotonic()
                park = busy is None and now - self._last_inline > WATCH_PARK_S
                if park:
                    # idle: sleep until an inline request starts (it sees the flag under this lock, so none is
                    # missed) instead of looking 40 times a second
                    self._watch_parked = True
                    self._watch_wake.clear()
                elif busy is None or busy[0] != self._gen or now - busy[1] < TAKEOVER_S:
                    continue
                else:
                    self._gen += 1
                    gen = self._gen
                    self.takeovers += 1
            if park:
                self._watch_wake.wait()
                continue
            threading.Thread(target=self._read_loop, args=(gen,), name=f"aocu-rpc-read-{gen}", daemon=True).start()

    def shutdown(self) -> None:
        self._stopped.set()
        self._watch_wake.set()
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        self._pool.shutdown(wait=False, cancel_futures=True)

    def server_close(self) -> None:
        for conn in list(self._conns):
            self._close(conn)
        for s in (self.listener, self._wake_r, self._wake_w):
            s.close()

