"""The history of the node's result-signing keys: the current key with the key-binding evidence the node
produced for it, and every past key with its evidence, so results signed before a rotation (or before a
restart with another config) keep verifying offline (docs/SEALING.md, "Node keys across reboots and rotation").

DATA-DIR/key-history.json (0600): {"current": RECORD | null, "past": [RECORD, ...]}, RECORD =
{"epoch", "ed25519" (b64url), "address", "node_config", "node_config_sha256", "report_data" (hex),
"tee", "evidence" (bundle JSON or null), "since" (unix s), "retired_at" (past only)}.
Workers record the key they bind at start; a record whose (key, epoch, config) differs from the stored
current one moves that one to `past`. `aocu keys rotate` replaces the key files and retires the current record.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cu.node.fsmodes import private_dir

HISTORY_FILE = "key-history.json"
LOCK_FILE = "key-history.lock"
MAX_PAST = 1000   # bounded: a node that rotates hourly keeps ~6 weeks of keys


def _ident(rec: dict[str, Any]) -> tuple:
    return rec.get("ed25519"), rec.get("epoch"), rec.get("node_config_sha256")


class KeyHistory:
    def __init__(self, data_dir: str | Path) -> None:
        self.dir = Path(data_dir)
        self.path = self.dir / HISTORY_FILE

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The history, read under an exclusive lock; written back (0600, atomically) when changed."""
        private_dir(self.dir)
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            doc = self.read()
            before = json.dumps(doc, sort_keys=True)
            yield doc
            if json.dumps(doc, sort_keys=True) != before:
                self._write(doc)
        finally:
            os.close(fd)

    def read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"current": None, "past": []}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path}: unreadable key history ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("past", []), list):
            raise ValueError(f"{self.path}: not a key history")
        doc.setdefault("past", [])
        doc.setdefault("current", None)
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(fd, 0o600)
            json.dump(doc, f, separators=(",", ":"))
            f.flush()
            os.fsync(fd)
        os.replace(tmp, self.path)

    def record_current(self, rec: dict[str, Any]) -> None:
        """`rec` is the key the node binds now; a different stored current key becomes a past key."""
        with self._locked() as doc:
            cur = doc["current"]
            if cur is not None and _ident(cur) == _ident(rec):
                if cur.get("evidence") is None and rec.get("evidence") is not None:
                    doc["current"] = {**rec, "since": cur.get("since", rec.get("since"))}
                return
            if cur is not None:
                self._retire(doc, cur)
            doc["past"] = [p for p in doc["past"] if _ident(p) != _ident(rec)]  # current again: not past
            doc["current"] = rec

    def retire_current(self) -> dict[str, Any] | None:
        """Moves the current record to `past` (after the key files were rotated); returns it."""
        with self._locked() as doc:
            cur = doc["current"]
            if cur is not None:
                self._retire(doc, cur)
                doc["current"] = None
            return cur

    @staticmethod
    def _retire(doc: dict[str, Any], rec: dict[str, Any]) -> None:
        past = [p for p in doc["past"] if _ident(p) != _ident(rec)]
        past.append({**rec, "retired_at": int(time.time())})
        doc["past"] = past[-MAX_PAST:]

    def past(self) -> list[dict[str, Any]]:
        try:
            return list(self.read()["past"])
        except ValueError:
            return []
