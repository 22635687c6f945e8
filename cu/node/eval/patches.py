"""The patch@1.0 cache (AO-Core direct state reads, `/now`): per process, the deep merge of every state patch its
results emitted. Saved next to every checkpoint (same seq), so that a process restored from a checkpoint has it
too; restored without it, the cache is unknown (None) until the process is evaluated from the start again.

Most processes never emit a patch: for an empty cache the checkpoint gets, instead of a file (4 KiB on disk
each), an empty marker: a zero-length file whose name carries the process id, the seq and an HMAC over both,
renamed from the process's previous marker (one syscall, no data block). A missing file and missing marker still
mean unknown, never empty: the marker is what says "empty at this seq", and only the evaluator can name one.

Authenticated (cu/node/eval/cacheauth.py): each file carries an HMAC over its process id, seq and content; a
file that does not verify is logged, counted and treated as missing (unknown), never served."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from cu.node.eval.cacheauth import CacheAuth, private_dir

log = logging.getLogger("aocu.evaluator")

PATCH_DEVICE = "patch@1.0"
# message fields that address or describe a patch message rather than being state
PATCH_RESERVED = frozenset({"device", "target", "anchor", "tags", "data-protocol", "variant", "type", "reference",
                            "patch-from", "patch-to"})


class _BadTag(Exception):
    pass


class PatchCache:
    def __init__(self, data_dir: str | Path, *, auth: CacheAuth | None = None) -> None:
        self.dir = Path(data_dir) / "patch-cache"
        # without an explicit auth (unit tests of the parts) a per-object random key: never unauthenticated
        self.auth = auth or CacheAuth(os.urandom(32))
        self._cache: dict[str, dict[str, Any]] = {}     # pid -> merged patch@1.0 state
        self._unknown: set[str] = set()                 # restored from a checkpoint without its patch cache
        self._marker: dict[str, Path] | None = None     # pid -> its empty marker on disk (listed once, lazily)
        self._listing = threading.Lock()                # checkpoints are also written by the retiring thread

    def apply(self, pid: str, raw: Any) -> None:
        """Merges the patches of one raw result (before the legacy merge drops `Patches`)."""
        if not isinstance(raw, dict) or raw.get("Error") is not None:
            return
        patches = patches_of(raw)
        if not patches:
            return
        cache = self._cache.setdefault(pid, {})
        for p in patches:
            merge_patch(cache, p)

    def get(self, pid: str) -> dict[str, Any] | None:
        """A copy of the cache of `pid`, or None when it cannot be known."""
        return None if pid in self._unknown else json.loads(json.dumps(self._cache.get(pid, {})))

    def _path(self, pid: str) -> Path:
        return self.dir / f"{pid}.json"

    def _marker_path(self, pid: str, seq: int) -> Path:
        return self.dir / f"{pid}.{seq}.{self.auth.tag('patch-cache-empty', pid, seq).hex()}.empty"

    def _markers(self) -> dict[str, Path]:
        """The markers on disk, listed once: a process's marker from an earlier run is moved, not leaked."""
        with self._listing:
            if self._marker is None:
                try:
                    names = [n for n in os.listdir(self.dir) if n.endswith(".empty")]
                except FileNotFoundError:
                    names = []
                self._marker = {n.split(".", 1)[0]: self.dir / n for n in names}
            return self._marker

    def _save_empty(self, pid: str, seq: int) -> None:
        """The cache is empty at `seq`: moves the process's marker there (a stale full file at another seq,
        left from before a reset, is harmless: its seq no longer matches, and the marker is read first)."""
        path = self._marker_path(pid, seq)
        markers = self._markers()
        old = markers.get(pid)
        try:
            if old is not None and old != path:
                try:
                    os.replace(old, path)
                except FileNotFoundError:
                    old = None
            if old is None:
                private_dir(path.parent)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            markers[pid] = path
        except OSError as exc:
            log.error("patch cache of %s at seq %d not saved: %s", pid, seq, exc)

    def _drop_marker(self, pid: str) -> None:
        old = self._markers().pop(pid, None)
        if old is not None:
            try:
                old.unlink()
            except OSError:
                pass

    def reset(self, pid: str) -> None:
        """Every message of `pid` is evaluated again from the start."""
        self._cache.pop(pid, None)
        self._unknown.discard(pid)

    def save(self, pid: str, seq: int) -> None:
        if pid not in self._unknown and not self._cache.get(pid):
            self._save_empty(pid, seq)
            return
        self._drop_marker(pid)      # the file says it all now
        path = self._path(pid)
        try:
            private_dir(path.parent)
            tmp = path.with_name(f".{path.name}.tmp")
            body = json.dumps({"seq": seq, "unknown": pid in self._unknown, "cache": self._cache.get(pid, {})})
            doc = {"mac": self.auth.tag("patch-cache", pid, body.encode()).hex(), "body": body}
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                os.fchmod(fd, 0o600)
                f.write(json.dumps(doc))
            os.replace(tmp, path)
        except OSError as exc:
            log.error("patch cache of %s at seq %d not saved: %s", pid, seq, exc)

    def load(self, pid: str, seq: int) -> None:
        """The cache saved with the checkpoint at `seq` (unknown when there is none)."""
        self.reset(pid)
        marker = self._marker_path(pid, seq)
        if marker.exists():             # empty at this seq (the evaluator named it: the name carries the HMAC)
            self._markers()[pid] = marker
            return
        try:
            doc = json.loads(self._path(pid).read_text())
            body = doc["body"]
            if not self.auth.verify(bytes.fromhex(doc["mac"]), "patch-cache", pid, body.encode()):
                raise _BadTag("HMAC mismatch")
            obj = json.loads(body)
            ok = obj.get("seq") == seq and isinstance(obj.get("cache"), dict) and not obj.get("unknown")
        except _BadTag as exc:
            self.auth.rejected(f"patch cache {self._path(pid)}", str(exc), "served as unknown")
            ok = False
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            ok = False
        if ok:
            self._cache[pid] = obj["cache"]
        else:
            self._unknown.add(pid)
            log.warning("patch cache of %s at checkpoint seq %d unavailable: /now serves no cache", pid, seq)


def patches_of(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """AOS state patches of a raw result: `Patches` entries, and outbox messages addressed to the patch@1.0
    device (`Send({device = 'patch@1.0', ...})`: a `device` field or tag)."""
    out: list[dict[str, Any]] = [p for p in raw.get("Patches") or [] if isinstance(p, dict)]
    for m in raw.get("Messages") or []:
        if not isinstance(m, dict):
            continue
        fields = {k: v for k, v in m.items() if k != "Tags"}
        for t in m.get("Tags") or []:
            if isinstance(t, dict) and isinstance(t.get("name"), str):
                fields.setdefault(t["name"], t.get("value"))
        if any(k.lower() == "device" and v == PATCH_DEVICE for k, v in fields.items()):
            out.append(fields)
    return out


def merge_patch(cache: dict[str, Any], patch: dict[str, Any]) -> None:
    """Deep-merges one patch into the process's cache (tables merge key by key, other values replace)."""
    _deep_merge(cache, {k: v for k, v in patch.items() if isinstance(k, str) and k.lower() not in PATCH_RESERVED})


def _deep_merge(cache: dict[str, Any], patch: dict[str, Any]) -> None:
    for k, v in patch.items():
        cur = cache.get(k)
        if isinstance(v, dict) and isinstance(cur, dict):
            _deep_merge(cur, v)
        else:
            cache[k] = json.loads(json.dumps(v))
