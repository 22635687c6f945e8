"""Module: a compiled AO process module for one Module-Format, with an on-disk compiled-module cache."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from cu import _native
from cu.engine.errors import ModuleError
from cu.engine.formats import FORMATS, FormatSpec, spec_for
from cu.engine.native import WASMTIME_VERSION, native

# Transformed bytes by (sha256 of input, transform) so a module loaded twice in a process is rewritten once.
_TRANSFORMED: dict[tuple[str, str], bytes] = {}
# Compiled modules by cache key (process-wide; compiled code is immutable and shared between instances).
_COMPILED: dict[str, object] = {}
_LOCK = threading.Lock()
_CACHE_MAGIC = b"AOCU-CWASM-1\n"
# Keyed format (Module.load with cache_key): HMAC-SHA256(cache_key, cache file key || blob) instead of the
# unkeyed SHA-256, so whoever can write the cache directory but lacks the key cannot make us run native code.
_CACHE_MAGIC_MAC = b"AOCU-CWASM-2\n"
log = logging.getLogger("aocu.engine")
RejectFn = Callable[[str, str], None]  # (cache file, why)


def _transform_kind(spec: FormatSpec) -> str:
    return f"eh+meter-{spec.meter}" if spec.meter else "eh"


def _transform(wasm: bytes, spec: FormatSpec, digest: str) -> bytes:
    """Legacy-EH translation (when the module uses it) and, for -metering formats, the metering rewrite."""
    key = (digest, _transform_kind(spec))
    with _LOCK:
        hit = _TRANSFORMED.get(key)
    if hit is not None:
        return hit
    t = getattr(_native, "transform", None)
    out = wasm
    try:
        if t is not None and hasattr(t, "has_legacy_eh") and t.has_legacy_eh(out):
            out = t.translate_legacy_eh(out)
        if spec.meter:
            if t is None or not hasattr(t, "meter"):
                raise ModuleError(
                    f"format {spec.name} needs the metering rewrite (docs/ABI.md, Limits and gas), "
                    "which is not available in this build"
                )
            out = t.meter(out, spec.meter == "i64")
    except ValueError as exc:
        raise ModuleError(f"invalid wasm module: {exc}") from exc
    with _LOCK:
        _TRANSFORMED[key] = out
    return out


def _compile(wasm: bytes) -> object:
    try:
        return native.CompiledModule.compile(wasm)
    except native.ModuleLoadError as exc:
        msg = str(exc)
        if "legacy_exceptions" in msg and not hasattr(getattr(_native, "transform", None), "translate_legacy_eh"):
            msg += " (the module uses legacy exception handling; its translation is not available in this build)"
        raise ModuleError(msg) from exc


def _cache_tag(mac_key: bytes, path: Path, blob: bytes) -> bytes:
    return hmac.new(mac_key, path.stem.encode() + b"\0" + blob, hashlib.sha256).digest()


def _read_cache(path: Path, mac_key: bytes | None = None, on_reject: RejectFn | None = None) -> object | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    n = len(_CACHE_MAGIC)
    # integrity check before handing bytes to wasmtime's deserializer (which trusts its input)
    if mac_key is not None:
        why = ("not in the authenticated format" if data[:n] != _CACHE_MAGIC_MAC else
               "" if hmac.compare_digest(_cache_tag(mac_key, path, data[n + 32 :]), data[n : n + 32]) else
               "HMAC mismatch")
        if why:
            log.warning("compiled-module cache %s rejected (%s): recompiling, not loading it", path, why)
            if on_reject is not None:
                on_reject(str(path), why)
            path.unlink(missing_ok=True)
            return None
    elif data[:n] != _CACHE_MAGIC or hashlib.sha256(data[n + 32 :]).digest() != data[n : n + 32]:
        path.unlink(missing_ok=True)
        return None
    try:
        return native.CompiledModule.deserialize(data[n + 32 :])
    except native.ModuleLoadError:
        path.unlink(missing_ok=True)
        return None


def _write_cache(path: Path, compiled: object, mac_key: bytes | None = None) -> None:
    blob = compiled.serialize()
    head = (_CACHE_MAGIC_MAC + _cache_tag(mac_key, path, blob) if mac_key is not None
            else _CACHE_MAGIC + hashlib.sha256(blob).digest())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".cwasm")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head + blob)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Module:
    """A validated, compiled module. Create with `Module.load`."""

    hash: str
    format: str

    def __init__(self, compiled: object, spec: FormatSpec, digest: str) -> None:
        self._compiled = compiled
        self._spec = spec
        self.hash = digest
        self.format = spec.name

    @classmethod
    def load(cls, wasm: bytes, fmt: str, *, cache_dir: str | Path | None = None, cache_key: bytes | None = None,
             on_cache_reject: RejectFn | None = None) -> Module:
        """`cache_key`: authenticate the on-disk cache with HMAC-SHA256 (files without a valid tag are logged,
        passed to `on_cache_reject(path, why)`, deleted and recompiled, never deserialized)."""
        spec = spec_for(fmt)
        if spec is None:
            raise ModuleError(f"unknown Module-Format {fmt!r}; supported: {', '.join(FORMATS)}")
        if not isinstance(wasm, bytes | bytearray | memoryview):
            raise ModuleError("wasm must be bytes")
        wasm = bytes(wasm)
        if wasm[:4] != b"\0asm":
            raise ModuleError("not a wasm binary (missing \\0asm magic)")
        digest = hashlib.sha256(wasm).hexdigest()
        key = hashlib.sha256(
            f"{digest};{_transform_kind(spec)};{native.fingerprint()};wasmtime={WASMTIME_VERSION}".encode()
        ).hexdigest()
        with _LOCK:
            compiled = _COMPILED.get(key)
        path = Path(cache_dir) / f"{key}.cwasm" if cache_dir is not None else None
        if compiled is None and path is not None:
            compiled = _read_cache(path, cache_key, on_cache_reject)
        fresh = compiled is None
        if compiled is None:
            compiled = _compile(_transform(wasm, spec, digest))
        problems = compiled.check(spec.family)
        if problems:
            raise ModuleError(f"module cannot run as {spec.name}: " + "; ".join(problems))
        if fresh and path is not None:
            try:
                _write_cache(path, compiled, cache_key)
            except OSError:
                pass  # the cache is an optimisation; an unwritable directory must not fail the load
        with _LOCK:
            _COMPILED[key] = compiled
        return cls(compiled, spec, digest)

    def imports(self) -> list[tuple[str, str, str, str]]:
        """(module, name, kind, signature) of every import, signature as params:results in i/j/f/d."""
        return list(self._compiled.imports())

    def exports(self) -> list[tuple[str, str]]:
        return list(self._compiled.exports())

    def __repr__(self) -> str:
        return f"Module(format={self.format!r}, hash={self.hash[:16]}…)"


def clear_process_cache() -> None:
    """Forget compiled/transformed modules held in this process (tests, benchmarks)."""
    with _LOCK:
        _COMPILED.clear()
        _TRANSFORMED.clear()
