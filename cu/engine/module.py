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
# Validated descriptions (no code) by (sha256 of input, transform kind), for modules not compiled yet.
_DESCRIBED: dict[tuple[str, str], object] = {}
_LOCK = threading.Lock()
_CACHE_MAGIC = b"AOCU-CWASM-1\n"
# Keyed format (Module.load with cache_key): HMAC-SHA256(cache_key, cache file key || blob) instead of the
# unkeyed SHA-256, so whoever can write the cache directory but lacks the key cannot make us run native code.
_CACHE_MAGIC_MAC = b"AOCU-CWASM-2\n"
log = logging.getLogger("aocu.engine")
RejectFn = Callable[[str, str], None]  # (cache file, why)
# memory64 lowering (native/transform/mem64.cpp): a wasm64 module whose memory cannot pass 65535 pages (its
# declared maximum or the instance's memory limit) runs on a 32-bit memory, so wasmtime drops bounds checks.
# AOCU_LOWER_MEMORY64=0 (or setting this to False) keeps memory64 everywhere (benchmarks, diagnosis).
LOWER_MEMORY64 = os.environ.get("AOCU_LOWER_MEMORY64", "1") != "0"
_MAX_LOWERED_PAGES = 65535  # 4 GiB - 64 KiB: an access at 0xFFFFFFFF + offset still traps
_LOWER_KIND = "+lower64-9"  # transform kind in the cache keys; bump when mem64.cpp's output changes
# Fuel-free engine (docs/ABI.md, Limits and gas): a non-metered instance skips wasmtime fuel when its
# Compute-Limit could not be reached before its wall-clock timeout even at FUEL_FREE_RATE instructions/s (far
# above any core's rate), so the epoch timeout always stops the call first and fuel changes nothing observable.
# AOCU_FUEL_FREE=0 (or setting this to False) keeps fuel everywhere (benchmarks, diagnosis).
FUEL_FREE = os.environ.get("AOCU_FUEL_FREE", "1") != "0"
FUEL_FREE_RATE = 5e10
DEFAULT_FUEL = 9_000_000_000_000_000  # the native default Compute-Limit of non-metered modules (instance.cpp)


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


def _lowered_bytes(wasm: bytes, spec: FormatSpec, digest: str) -> bytes:
    key = (digest, _transform_kind(spec) + _LOWER_KIND)
    with _LOCK:
        hit = _TRANSFORMED.get(key)
    if hit is None:
        hit = _native.transform.lower_memory64(_transform(wasm, spec, digest))
        with _LOCK:
            _TRANSFORMED[key] = hit
    return hit


def _load_error(exc: Exception) -> ModuleError:
    msg = str(exc)
    if "legacy_exceptions" in msg and not hasattr(getattr(_native, "transform", None), "translate_legacy_eh"):
        msg += " (the module uses legacy exception handling; its translation is not available in this build)"
    return ModuleError(msg)


def _compile(wasm: bytes, fuel: bool = True) -> object:
    try:
        return native.CompiledModule.compile(wasm, fuel)
    except native.ModuleLoadError as exc:
        raise _load_error(exc) from exc


def _describe(wasm: bytes, spec: FormatSpec, digest: str) -> object:
    """The module validated and described (imports, exports) without compiling: Module.load's check when no
    compiled variant exists yet, so a first load compiles only the variant its first instance runs."""
    key = (digest, _transform_kind(spec))
    with _LOCK:
        hit = _DESCRIBED.get(key)
    if hit is None:
        try:
            hit = native.CompiledModule.describe(_transform(wasm, spec, digest))
        except native.ModuleLoadError as exc:
            raise _load_error(exc) from exc
        with _LOCK:
            _DESCRIBED[key] = hit
    return hit


def _cache_tag(mac_key: bytes, path: Path, blob: bytes) -> bytes:
    return hmac.new(mac_key, path.stem.encode() + b"\0" + blob, hashlib.sha256).digest()


def _read_cache(path: Path, mac_key: bytes | None = None, on_reject: RejectFn | None = None,
                fuel: bool = True) -> object | None:
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
        return native.CompiledModule.deserialize(data[n + 32 :], fuel)
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


def _code_key(digest: str, kind: str, fuel: bool) -> str:
    # the engine's fingerprint differs between the fuel and fuel-free engines, so code compiled for one is
    # never loaded into the other
    return hashlib.sha256(f"{digest};{kind};{native.fingerprint(fuel)};wasmtime={WASMTIME_VERSION}".encode()
                          ).hexdigest()


def _cached_code(digest: str, kind: str, cache_dir: str | Path | None, cache_key: bytes | None,
                 on_reject: RejectFn | None, fuel: bool) -> object | None:
    """Compiled code for (module digest, transform kind, engine) from this process or the disk cache, or None."""
    key = _code_key(digest, kind, fuel)
    with _LOCK:
        compiled = _COMPILED.get(key)
    if compiled is None and cache_dir is not None:
        compiled = _read_cache(Path(cache_dir) / f"{key}.cwasm", cache_key, on_reject, fuel)
        if compiled is not None:
            with _LOCK:
                _COMPILED[key] = compiled
    return compiled


def _cached_compile(digest: str, kind: str, make: Callable[[], bytes], cache_dir: str | Path | None,
                    cache_key: bytes | None, on_reject: RejectFn | None,
                    problem: Callable[[object], ModuleError | None], fuel: bool = True) -> object:
    """Compiled code for (module digest, transform kind, engine configuration): from this process, the disk
    cache or a compile of `make()`; `problem(compiled)` returns an error to raise before anything is cached."""
    key = _code_key(digest, kind, fuel)
    path = Path(cache_dir) / f"{key}.cwasm" if cache_dir is not None else None
    compiled = _cached_code(digest, kind, cache_dir, cache_key, on_reject, fuel)
    fresh = compiled is None
    if compiled is None:
        compiled = _compile(make(), fuel)
    err = problem(compiled)
    if err:
        raise err
    if fresh and path is not None:
        try:
            _write_cache(path, compiled, cache_key)
        except OSError:
            pass  # the cache is an optimisation; an unwritable directory must not fail the load
    with _LOCK:
        _COMPILED[key] = compiled
    return compiled


class Module:
    """A validated module; each variant's code (lowered or not, fuel or not) is compiled on first use.
    Create with `Module.load`."""

    hash: str
    format: str

    def __init__(self, compiled: object, spec: FormatSpec, digest: str) -> None:
        # Describes the module (imports, exports, metered); compiled code of some variant or, before any
        # variant is compiled, a description only (native CompiledModule.describe: no code).
        self._compiled = compiled
        self._lowerable: tuple | None = None  # (wasm, max pages, cache dir, key, on_reject) when wasm64
        self._source: tuple = ()  # (wasm, cache dir, key, on_reject): to compile the variants
        self._variants: dict[tuple[bool, bool], object] = {}  # (lowered, fuel) -> code, compiled on first use
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

        def problem(c: object) -> ModuleError | None:
            problems = c.check(spec.family)
            return ModuleError(f"module cannot run as {spec.name}: " + "; ".join(problems)) if problems else None

        lowerable = None
        t = getattr(_native, "transform", None)
        if spec.family == native.W64 and hasattr(t, "lower_memory64"):
            try:
                lim = t.memory64_limits(wasm)
            except ValueError:
                lim = None
            if lim is not None and lim[0] <= _MAX_LOWERED_PAGES:
                lowerable = (wasm, lim[1], cache_dir, cache_key, on_cache_reject)
        # No compile here: the first instance compiles the one variant it runs (compiled_for). Code of any
        # variant already compiled (this process or the disk cache) describes the module; else wasmtime's
        # validator checks it and the import and export sections describe it.
        found: tuple[tuple[bool, bool], object] | None = None
        for lowered, fuel in ((True, False), (False, False), (False, True), (True, True)):  # node default first
            if lowered and lowerable is None:
                continue
            kind = _transform_kind(spec) + (_LOWER_KIND if lowered else "")
            code = _cached_code(digest, kind, cache_dir, cache_key, on_cache_reject, fuel)
            if code is not None:
                found = ((lowered, fuel), code)
                break
        desc = found[1] if found is not None else _describe(wasm, spec, digest)
        err = problem(desc)
        if err:
            raise err
        mod = cls(desc, spec, digest)
        mod._source = (wasm, cache_dir, cache_key, on_cache_reject)
        mod._lowerable = lowerable
        if found is not None:
            mod._variants[found[0]] = found[1]
        return mod

    def needs_fuel(self, compute_limit: int | None, timeout_s: float | None) -> bool:
        """Whether an instance with these limits must run on the fuel engine: only a non-metered module whose
        Compute-Limit (default DEFAULT_FUEL) could run out before its timeout; metered formats count gas
        themselves and no timeout means no such bound (docs/ABI.md, Limits and gas)."""
        if not FUEL_FREE:
            return True  # the single-engine behaviour
        if self._compiled.metered:
            return False
        if timeout_s is None or timeout_s <= 0:
            return True
        limit = DEFAULT_FUEL if compute_limit is None or compute_limit < 0 else compute_limit
        return limit < timeout_s * FUEL_FREE_RATE

    def compiled_for(self, memory_limit: int | None, *, fuel: bool = True) -> object:
        """The compiled code an instance with this memory limit runs: the memory64-lowered module when the
        memory can never pass 65535 pages (declared maximum or limit), else the module as loaded; compiled
        for the fuel engine or (`fuel=False`, see `needs_fuel`) the fuel-free one."""
        low = self._lowerable
        if low is not None and LOWER_MEMORY64:
            _wasm, max_pages, *_ = low
            bound = min(max_pages if max_pages is not None else 1 << 48,
                        memory_limit // 65536 if memory_limit is not None and memory_limit >= 0 else 1 << 48)
            if bound <= _MAX_LOWERED_PAGES:
                code = self._variant(True, fuel)
                if code is not None:
                    return code
        code = self._variant(False, fuel)
        assert code is not None
        return code

    def _variant(self, lowered: bool, fuel: bool) -> object | None:
        """Compiled code for (lowered, fuel), compiled (or read from the cache) on first use; None when the
        lowering does not apply to this module after all."""
        code = self._variants.get((lowered, fuel))
        if code is not None:
            return code
        wasm, cache_dir, cache_key, on_reject = self._source
        spec, digest = self._spec, self.hash
        if lowered:
            try:
                code = _cached_compile(digest, _transform_kind(spec) + _LOWER_KIND,
                                       lambda: _lowered_bytes(wasm, spec, digest),
                                       cache_dir, cache_key, on_reject, lambda c: None, fuel)
            except (ValueError, ModuleError) as exc:  # a module the lowering does not handle runs as it is
                log.warning("module %s: memory64 lowering not applied: %s", digest[:16], exc)
                self._lowerable = None
                return None
        else:
            code = _cached_compile(digest, _transform_kind(spec), lambda: _transform(wasm, spec, digest),
                                   cache_dir, cache_key, on_reject, lambda c: None, fuel)
        self._variants[(lowered, fuel)] = code
        return code

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
        _DESCRIBED.clear()
