"""The kept-alive part of the gunicorn worker class of `aocu serve` (`cu.http.worker.KeepAliveThreadWorker`;
`aocu serve` runs its subclass `cu.serve.worker.AocuWorker`, which also keeps slow clients off the threads).

gunicorn's gthread worker hands every kept-alive connection back to its main thread's poller after each
request, and the poller hands it to a pool thread again when the next request arrives: two thread hand-offs
(futex wake-ups, and on a VM cross-CPU interrupts) per request. A client of this node usually sends its next
request at once (aoconnect posts a message, then asks for its result), so a pool thread that just answered
waits a few milliseconds for the next request on the same connection and serves it itself. An idle
connection goes back to the poller as before, so threads are not held by idle clients for longer than
INLINE_WAIT_S. On the node benchmark this takes about 0.2 ms off each request."""

from __future__ import annotations

import select
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

INLINE_WAIT_S = 0.01


class KeepAliveThreadWorker(ThreadWorker):
    def handle(self, conn: Any) -> Any:
        keep = super().handle(conn)
        while keep is True and self.alive:
            # bytes already read past the last request (a pipelining client) need no wait
            if not conn.parser.unreader.buf.getvalue() and not _readable(conn.sock, INLINE_WAIT_S):
                break
            keep = super().handle(conn)
        return keep


def _readable(sock: Any, timeout_s: float) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    try:
        return bool(poller.poll(timeout_s * 1000))
    except OSError:
        return False
