"""Freshly scheduled messages kept in memory: a message's committed log entry and item, from scheduling until it
is evaluated, so that its evaluation reads neither the log nor the item back from the store."""

from __future__ import annotations

import threading

from cu.node.store import ItemMeta, LogEntry

LIMIT = 10_000      # entries kept at most; normally each is consumed within milliseconds

Recent = tuple[LogEntry, tuple[ItemMeta, bytes]]


class RecentMessages:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_nonce: dict[str, dict[int, Recent]] = {}     # pid -> nonce -> (entry, (meta, data))
        self._ids: dict[tuple[str, str], int] = {}            # (pid, message id) -> nonce

    def remember(self, entry: LogEntry, item: tuple[ItemMeta, bytes]) -> None:
        """A message was durably scheduled (the store has it; this is only a shortcut)."""
        with self._lock:
            if len(self._ids) >= LIMIT:
                self._by_nonce.clear()      # bounded: entries are normally consumed within milliseconds
                self._ids.clear()
            meta, raw = item    # the data is the last meta.size bytes of the stored form, whatever its codec
            self._by_nonce.setdefault(entry.pid, {})[entry.nonce] = (entry, (meta, raw[len(raw) - meta.size:]))
            self._ids[(entry.pid, entry.message_id)] = entry.nonce

    def entry(self, pid: str, message_id: str) -> LogEntry | None:
        with self._lock:
            nonce = self._ids.get((pid, message_id))
            got = self._by_nonce.get(pid, {}).get(nonce) if nonce is not None else None
            return got[0] if got is not None else None

    def chunk(self, pid: str, first: int, last: int) -> list[tuple[LogEntry, tuple[ItemMeta, bytes] | None]] | None:
        """Entries first..last from memory when all of them are there (else None: read the log)."""
        with self._lock:
            by_nonce = self._by_nonce.get(pid)
            if not by_nonce or any(n not in by_nonce for n in range(first, last + 1)):
                return None
            return [by_nonce[n] for n in range(first, last + 1)]

    def forget(self, entry: LogEntry) -> None:
        with self._lock:
            by_nonce = self._by_nonce.get(entry.pid)
            if by_nonce is not None and by_nonce.pop(entry.nonce, None) is not None:
                self._ids.pop((entry.pid, entry.message_id), None)
                if not by_nonce:
                    del self._by_nonce[entry.pid]
