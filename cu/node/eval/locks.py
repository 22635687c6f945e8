"""Per-process locks, for local and bridged processes alike: evaluation of one process is serialised."""

from __future__ import annotations

import threading


class KeyedLocks:
    """One reentrant lock per key (process id), created on first use: `locks(pid)`."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}

    def __call__(self, key: str) -> threading.RLock:
        with self._guard:
            lk = self._locks.get(key)
            if lk is None:
                lk = self._locks[key] = threading.RLock()
            return lk
