"""Snapshot: the state of an instance between calls, as a versioned msgpack envelope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack

from cu import _native
from cu.engine.errors import SnapshotError
from cu.engine.native import WASMTIME_VERSION, native

ENVELOPE_KIND = "aocu/engine-snapshot"
ENVELOPE_VERSION = 1


class Snapshot:
    """Memory image (non-zero pages, zstd), exported mutable globals and host-side state of an instance.

    `memory_root` is the page-Merkle root of the memory (32 bytes), or b"" when the build has no merkle.
    """

    module_hash: str
    format: str
    memory_root: bytes

    def __init__(self, *, module_hash: str, format: str, state: tuple, memory_root: bytes) -> None:
        self.module_hash = module_hash
        self.format = format
        # (mem_size, memory image, [(name, kind, bits)], host state bytes); the memory image is the encoded
        # bytes (snapshot.h) or a native PageImage (raw pages, restored copy-on-write)
        self._state = state
        self.memory_root = memory_root
        self._image: Any = state[1] if isinstance(state[1], native.PageImage) else None

    @property
    def memory_size(self) -> int:
        return int(self._state[0])

    # -- raw page images (copy-on-write restore, docs/INTERNAL-API.md) -------------------------------------
    def page_image(self) -> Any:
        """The snapshot's memory as a raw page image (`cu._native.engine.PageImage`), built once (decoded into
        a sealed memfd) and kept: every `Instance.restore(..., cow=True)` maps it copy-on-write."""
        if self._image is None:
            try:
                self._image = native.PageImage.from_encoded(self._state[1])
            except native.SnapshotDataError as exc:
                raise SnapshotError(str(exc)) from exc
            if self.memory_root and bytes(self._image.root) != self.memory_root:
                self._image = None
                raise SnapshotError("snapshot memory does not match its page-Merkle root")
        return self._image

    def _encoded(self) -> bytes:
        image = self._state[1]
        return bytes(image.encode()) if isinstance(image, native.PageImage) else bytes(image)

    def to_file(self, path: str | Path) -> None:
        """Writes the snapshot as one raw page-image file (envelope without memory in the header, then the
        pages, 4 KiB-aligned, zero pages as holes), atomically (temporary file, fsync, rename)."""
        meta = msgpack.packb(self._envelope(memory=False), use_bin_type=True)
        try:
            self.page_image().write_file(str(path), meta)
        except RuntimeError as exc:
            raise SnapshotError(str(exc)) from exc

    @classmethod
    def from_file(cls, path: str | Path, *, verify: bool = True) -> Snapshot:
        """A snapshot whose memory is the file written by `to_file`, mapped (not read) by restores. The
        structure (sizes, exact length, header digest) and the page-Merkle root of the page digests are always
        checked; `verify` also hashes every page against its digest (one full read). SnapshotError if the
        file is truncated, altered or not a page image."""
        try:
            image = native.PageImage.open(str(path), bool(verify))
        except native.SnapshotDataError as exc:
            raise SnapshotError(str(exc)) from exc
        try:
            env: Any = msgpack.unpackb(bytes(image.meta), raw=False, strict_map_key=True)
        except Exception as exc:
            raise SnapshotError(f"page image {path}: header is not a snapshot envelope ({exc})") from exc
        snap = cls._from_envelope(env, image)
        if snap.memory_root and bytes(image.root) != snap.memory_root:
            raise SnapshotError(f"page image {path}: page digests do not match the snapshot's page-Merkle root")
        return snap

    def to_bytes(self) -> bytes:
        return msgpack.packb(self._envelope(memory=True), use_bin_type=True)

    def _envelope(self, *, memory: bool) -> dict:
        mem_size, _, globals_, host = self._state
        env = {
            "kind": ENVELOPE_KIND,
            "v": ENVELOPE_VERSION,
            "module_hash": self.module_hash,
            "format": self.format,
            "engine": {
                "aocu_native": _native.__version__,
                "wasmtime": WASMTIME_VERSION,
                "config": native.fingerprint(),
            },
            "globals": [[n, k, b] for n, k, b in globals_],
            "host": bytes(host),
            "memory_root": bytes(self.memory_root),
            "memory_size": int(mem_size),
        }
        if memory:
            env["memory"] = self._encoded()
        return env

    @classmethod
    def from_bytes(cls, data: bytes) -> Snapshot:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SnapshotError("snapshot data must be bytes")
        try:
            env: Any = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types on garbage
            raise SnapshotError(f"not an aocu snapshot (msgpack: {exc})") from exc
        return cls._from_envelope(env, None)

    @classmethod
    def _from_envelope(cls, env: Any, page_image: Any) -> Snapshot:
        if not isinstance(env, dict) or env.get("kind") != ENVELOPE_KIND:
            raise SnapshotError("not an aocu engine snapshot envelope")
        v = env.get("v")
        if v != ENVELOPE_VERSION:
            raise SnapshotError(f"snapshot envelope version {v!r} is not supported (this engine reads {ENVELOPE_VERSION})")
        try:
            module_hash = env["module_hash"]
            fmt = env["format"]
            globals_ = [(str(n), int(k), int(b)) for n, k, b in env["globals"]]
            host = env["host"]
            root = env["memory_root"]
            mem_size = env["memory_size"]
            image = env["memory"] if page_image is None else page_image
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"snapshot envelope is incomplete or malformed: {exc}") from exc
        if not (
            isinstance(module_hash, str)
            and isinstance(fmt, str)
            and isinstance(host, bytes)
            and isinstance(root, bytes)
            and isinstance(image, bytes | native.PageImage)
            and isinstance(mem_size, int)
        ):
            raise SnapshotError("snapshot envelope has fields of the wrong type")
        try:
            size = image.size if isinstance(image, native.PageImage) else native.encoded_memory_size(image)
            if size != mem_size:
                raise SnapshotError("snapshot memory image does not match its recorded size")
        except native.SnapshotDataError as exc:
            raise SnapshotError(str(exc)) from exc
        return cls(module_hash=module_hash, format=fmt, state=(mem_size, image, globals_, host), memory_root=root)

    def __repr__(self) -> str:
        return f"Snapshot(module={self.module_hash[:16]}…, memory={self.memory_size} bytes)"
