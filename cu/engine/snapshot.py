"""Snapshot: the state of an instance between calls, as a versioned msgpack envelope."""

from __future__ import annotations

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
        self._state = state  # (mem_size, memory image, [(name, kind, bits)], host state bytes)
        self.memory_root = memory_root

    @property
    def memory_size(self) -> int:
        return int(self._state[0])

    def to_bytes(self) -> bytes:
        mem_size, image, globals_, host = self._state
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
            "memory": bytes(image),
        }
        return msgpack.packb(env, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> Snapshot:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SnapshotError("snapshot data must be bytes")
        try:
            env: Any = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types on garbage
            raise SnapshotError(f"not an aocu snapshot (msgpack: {exc})") from exc
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
            image = env["memory"]
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"snapshot envelope is incomplete or malformed: {exc}") from exc
        if not (
            isinstance(module_hash, str)
            and isinstance(fmt, str)
            and isinstance(host, bytes)
            and isinstance(root, bytes)
            and isinstance(image, bytes)
            and isinstance(mem_size, int)
        ):
            raise SnapshotError("snapshot envelope has fields of the wrong type")
        try:
            if native.encoded_memory_size(image) != mem_size:
                raise SnapshotError("snapshot memory image does not match its recorded size")
        except native.SnapshotDataError as exc:
            raise SnapshotError(str(exc)) from exc
        return cls(module_hash=module_hash, format=fmt, state=(mem_size, image, globals_, host), memory_root=root)

    def __repr__(self) -> str:
        return f"Snapshot(module={self.module_hash[:16]}…, memory={self.memory_size} bytes)"
