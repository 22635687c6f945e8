"""`/state` of processes too large for one evaluator RPC frame (`StateExports`).

A state up to `inline_max` bytes travels inline in its reply. A larger one is copied once, under the process's
lock, from the instance's zero-copy memory view into a spool file (`DATA-DIR/state-exports/`, 0600) while its
SHA-256 is computed; the worker then reads it back by offset in chunks of at most `chunk` bytes and streams them
to the client. Neither side ever holds more than a chunk of it in memory, the process's lock is released as soon
as the copy is written (a slow client stalls nobody), and the bytes are the memory as of one point in the log.
An export is removed when its last byte is read, when the worker gives it up, or after `ttl_s` without a read;
at most `max_open` exist at once (each is the size of a process's memory on disk)."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cu.node.errors import NotFound, Unavailable

DIR = "state-exports"
WRITE_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class StateOut:
    """A process's state: inline (`body`), or exported (`export` names it; `body` is empty)."""
    body: bytes
    headers: dict[str, str]
    length: int
    digest: bytes                 # SHA-256 of the whole state
    export: str | None = None


@dataclass
class _Export:
    path: Path
    length: int
    used: float = field(default_factory=time.monotonic)


class StateExports:
    def __init__(self, data_dir: str | Path, *, inline_max: int, chunk: int, ttl_s: float = 120.0,
                 max_open: int = 4) -> None:
        self.dir = Path(data_dir) / DIR
        self.inline_max = inline_max
        self.chunk = chunk
        self.ttl_s = ttl_s
        self.max_open = max_open
        self._lock = threading.Lock()
        self._open: dict[str, _Export] = {}
        self._timer: threading.Timer | None = None
        # exports of an earlier evaluator process are unreadable now (their tokens died with it)
        shutil.rmtree(self.dir, ignore_errors=True)

    def offer(self, memory: memoryview | bytes, headers: dict[str, str]) -> StateOut:
        """The state `memory` (call holding the process's lock: the view must not change meanwhile)."""
        n = len(memory)
        if n <= self.inline_max:
            body = bytes(memory)
            return StateOut(body, headers, n, hashlib.sha256(body).digest())
        self.sweep()
        with self._lock:
            if len(self._open) >= self.max_open:
                raise Unavailable(f"{self.max_open} large state downloads are in progress; try again shortly")
            token = secrets.token_hex(16)
            self._open[token] = _Export(self.dir / token, n)
        try:
            self.dir.mkdir(mode=0o700, exist_ok=True)
            h = hashlib.sha256()
            view = memoryview(memory)
            fd = os.open(self.dir / token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                for off in range(0, n, WRITE_CHUNK):
                    part = view[off:off + WRITE_CHUNK]
                    h.update(part)
                    done = 0
                    while done < len(part):
                        done += os.write(fd, part[done:])
            finally:
                os.close(fd)
        except OSError as exc:
            self.release(token)
            raise Unavailable(f"cannot spool the state for download: {exc}") from None
        self._arm()
        return StateOut(b"", headers, n, h.digest(), token)

    def _arm(self) -> None:
        """A sweep in `ttl_s` while exports are open: a download nobody finishes (its worker died) is removed
        even when no other large /state comes."""
        with self._lock:
            if self._timer is not None or not self._open:
                return
            self._timer = threading.Timer(self.ttl_s / 2, self._tick)
            self._timer.daemon = True
            self._timer.start()

    def _tick(self) -> None:
        with self._lock:
            self._timer = None
        self.sweep()
        self._arm()

    def read(self, token: str, offset: int, size: int) -> bytes:
        """Up to min(size, chunk) bytes of export `token` from `offset`; the export is removed once its last
        byte has been read."""
        with self._lock:
            ex = self._open.get(token)
            if ex is not None:
                ex.used = time.monotonic()
        if ex is None:
            raise NotFound("state download expired or unknown; request /state again")
        if not 0 <= offset <= ex.length or size < 0:
            raise NotFound(f"state download has no bytes at offset {offset}")
        size = min(size, self.chunk, ex.length - offset)
        try:
            with open(ex.path, "rb") as f:
                data = os.pread(f.fileno(), size, offset)
        except OSError as exc:
            self.release(token)
            raise NotFound(f"state download lost: {exc}") from None
        if offset + len(data) >= ex.length:
            self.release(token)
        return data

    def release(self, token: str) -> None:
        with self._lock:
            ex = self._open.pop(token, None)
        if ex is not None:
            ex.path.unlink(missing_ok=True)

    def sweep(self) -> None:
        """Removes exports nobody read for `ttl_s` (a worker that died mid-download)."""
        now = time.monotonic()
        with self._lock:
            stale = [t for t, ex in self._open.items() if now - ex.used > self.ttl_s]
        for t in stale:
            self.release(t)

    def __len__(self) -> int:
        return len(self._open)
