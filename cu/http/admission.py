"""Admission of dry-runs (POST /dry-run and the AO-Core `as=execution` dry-run): anyone may send them, each one
occupies a request thread for as long as it evaluates, and a module can make that `--dry-run-timeout` every time.
So that dry-runs never take every thread from /health, message posts and result reads, each worker process

- lets at most `dry_run_slots` dry-runs run at once (`--dry-run-slots`, default a quarter of its threads, at
  least 1), and as many wait for a slot, each up to `dry_run_queue_s`; a dry-run arriving when the queue is full,
  or still waiting after that, is answered 503 with Retry-After. A waiting dry-run holds a thread too, so the
  dry-runs of a worker hold at most 2 x slots threads (half of them by default) and the others stay free for
  /health, messages and results;
- gives each client address a token bucket (`--dry-run-rate` per second, bursts of `dry_run_burst`); a dry-run
  beyond it is answered 429 with Retry-After before its body is read.

The buckets and slots are per worker process: node-wide, a client may get up to workers x the rate."""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from flask import current_app, request
from werkzeug.exceptions import ServiceUnavailable, TooManyRequests

from cu.node.config import NodeConfig

F = TypeVar("F", bound=Callable[..., Any])
KEY = "aocu.admission"
MAX_CLIENTS = 10_000          # buckets kept; the least recently seen client is forgotten (its bucket was full)


class DryRunAdmission:
    def __init__(self, *, slots: int, queue_s: float, rate: float, burst: int) -> None:
        """`slots` 0: no limit on dry-runs at once; `rate` 0: no rate limit (an app built without `aocu serve`)."""
        self.slots, self.queue_s, self.rate, self.burst = slots, queue_s, rate, burst
        self._slots = threading.BoundedSemaphore(max(1, slots))
        self._waiting = 0                       # dry-runs waiting for a slot (at most `slots`)
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()   # client -> (tokens, at)

    @classmethod
    def from_config(cls, cfg: NodeConfig) -> DryRunAdmission:
        return cls(slots=cfg.dry_run_slots, queue_s=cfg.dry_run_queue_s, rate=cfg.dry_run_rate,
                   burst=cfg.dry_run_burst)

    def take_token(self, client: str) -> None:
        """One token of `client`'s bucket, or TooManyRequests (429) saying when the next one is there."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / self.rate)
                raise _refused(TooManyRequests, wait, f"too many dry-runs from {client}: at most {self.rate:g} per "
                               f"second (bursts of {self.burst}); retry in {wait} s")
            self._buckets[client] = (tokens - 1.0, now)
            while len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Holds one of the worker's dry-run slots, or ServiceUnavailable (503) after waiting `queue_s`."""
        if self.slots <= 0:
            yield
            return
        if not self._slots.acquire(blocking=False):
            with self._lock:
                full = self._waiting >= self.slots
                self._waiting += not full
            if full:
                raise _busy(self.slots)
            try:
                got = self._slots.acquire(timeout=self.queue_s)
            finally:
                with self._lock:
                    self._waiting -= 1
            if not got:
                raise _busy(self.slots)
        try:
            yield
        finally:
            self._slots.release()


def _busy(slots: int) -> Exception:
    return _refused(ServiceUnavailable, 1, f"busy: {slots} dry-run(s) are evaluating in this worker and as many "
                                          "wait; retry in 1 s")


def _refused(cls: type, retry_after: int, message: str) -> Exception:
    exc = cls(description=message, retry_after=max(1, retry_after))
    return exc


def admission() -> DryRunAdmission:
    """This worker's (this app's) dry-run admission."""
    adm = current_app.extensions.get(KEY)
    if adm is None:
        from cu.http.state import node
        adm = current_app.extensions.setdefault(KEY, DryRunAdmission.from_config(node().config))
    return adm


def dry_run(view: F) -> F:
    """Route decorator: the request is a dry-run (a token of its client, then a slot while the view runs)."""
    @functools.wraps(view)
    def admitted(*args: Any, **kwargs: Any) -> Any:
        adm = admission()
        adm.take_token(request.remote_addr or "unknown")
        with adm.slot():
            return view(*args, **kwargs)
    return admitted  # type: ignore[return-value]
