"""Authentication of the caches the evaluator loads native code or state from (compiled modules, checkpoints,
the patch cache): HMAC-SHA256 with a key from the TEE's sealing derivation (`attestation.sealing.derive_key(tee,
"aocu/cache/v1")`, docs/SEALING.md). An entry whose tag does not verify is logged (one line: which entry, why),
counted (`cache_rejected`) and rebuilt by its owner; it is never executed or restored.

Where the TEE has no sealing key (TDX), the key is random per evaluator process: entries from an earlier run
no longer verify and are rebuilt, which is the ephemeral-storage trade-off documented there."""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import logging
import os
import threading
from pathlib import Path

from attestation.sealing import SealingUnavailable, derive_key
from cu.node.fsmodes import private_dir

log = logging.getLogger("aocu.evaluator")

LABEL = "aocu/cache/v1"
TAG_SIZE = 32
_LOCK = threading.Lock()
_EPHEMERAL: dict[str, bytes] = {}               # data dir -> per-process key where no sealing key exists
# data dir and module cache dir -> the node's auth (the bridge, built apart, shares both with the evaluator)
_BY_DIR: dict[str, CacheAuth] = {}


class CacheAuth:
    def __init__(self, key: bytes, metrics: dict[str, float] | None = None, *, ephemeral: bool = False) -> None:
        if len(key) != 32:
            raise ValueError("cache key must be 32 bytes")
        self._key = key
        self.ephemeral = ephemeral
        self.metrics = metrics if metrics is not None else {}
        self.metrics.setdefault("cache_rejected", 0)

    @classmethod
    def for_node(cls, tee: str, data_dir: str | Path, metrics: dict[str, float] | None = None, *,
                 cache_dir: str | Path | None = None) -> CacheAuth:
        """The node's cache auth; registered for `data_dir` and `cache_dir` so that the bridge's snapshots and
        module cache (on the same directories) authenticate with it too (`for_dir`)."""
        try:
            auth = cls(_derive(tee, Path(data_dir)), metrics)
        except SealingUnavailable as exc:
            with _LOCK:
                key = _EPHEMERAL.setdefault(str(Path(data_dir).resolve()), os.urandom(32))
            log.warning("no sealing key (%s): caches are authenticated with a per-process key and rebuilt "
                        "after a restart", exc)
            auth = cls(key, metrics, ephemeral=True)
        register(data_dir, auth)
        if cache_dir is not None:
            register(cache_dir, auth)
        return auth

    def subkey(self, purpose: str) -> bytes:
        """A key for one kind of entry (the engine's compiled-module cache gets `subkey("cwasm")`)."""
        return hmac.new(self._key, b"aocu/cache-subkey\0" + purpose.encode(), hashlib.sha256).digest()

    def tag(self, kind: str, *parts: bytes | str | int | None) -> bytes:
        """HMAC over `kind` and length-prefixed `parts` (unambiguous: no two part lists give the same bytes)."""
        h = hmac.new(self._key, kind.encode() + b"\0", hashlib.sha256)
        for p in parts:
            b = (b"\xff" if p is None else p if isinstance(p, bytes) else str(p).encode())
            h.update(len(b).to_bytes(8, "big") + b)
        return h.digest()

    def verify(self, tag: bytes, kind: str, *parts: bytes | str | int | None) -> bool:
        return hmac.compare_digest(tag, self.tag(kind, *parts))

    def rejected(self, what: str, why: str, action: str) -> None:
        log.warning("cache entry %s rejected (%s): %s", what, why, action)
        self.metrics["cache_rejected"] = self.metrics.get("cache_rejected", 0) + 1


def _derive(tee: str, data_dir: Path) -> bytes:
    """derive_key under the data dir's signer.lock, the lock the workers hold while they create the keys and
    the simulated TEE state (cu/http/__init__.py): the evaluator must not create a second simulated chip."""
    private_dir(data_dir)
    fd = os.open(data_dir / "signer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return derive_key(tee, LABEL, data_dir=data_dir)
    finally:
        os.close(fd)


def register(directory: str | Path, auth: CacheAuth) -> None:
    with _LOCK:
        _BY_DIR[str(Path(directory).resolve())] = auth


def for_dir(directory: str | Path) -> CacheAuth | None:
    """The auth a node in this process registered for `directory` (its data dir or module cache), if any."""
    with _LOCK:
        return _BY_DIR.get(str(Path(directory).resolve()))
