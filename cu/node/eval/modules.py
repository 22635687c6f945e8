"""Loading modules and instances, for local and bridged processes alike: the native engine, a cache of loaded
modules, a process's instance limits and its legacy env."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cu.node import legacy
from cu.node.errors import Invalid, NotFound, Unavailable
from cu.node.eval import cacheauth
from cu.node.limits import module_limits


def engine() -> Any:
    """The native engine module (`cu.engine`), or Unavailable when it is not built."""
    try:
        import cu.engine as engine
        engine.Instance  # noqa: B018 - fail here, with a clear error, if the engine is not built
    except (ImportError, AttributeError) as exc:
        raise Unavailable(f"the native engine (cu.engine) is not available: {exc}") from None
    return engine


class ModuleCache:
    """Loaded engine modules by module id. `fetch(module_id)` returns the module's wasm (None: not found); the
    compiled code is cached on disk in `cache_dir` (0700) by the engine, authenticated with `auth` (or the auth
    the node registered for that directory, cu/node/eval/cacheauth.py): a cache file without a valid HMAC is
    logged, counted and recompiled, never loaded."""

    def __init__(self, cache_dir: Path | None, fetch: Callable[[str], bytes | None], *,
                 auth: cacheauth.CacheAuth | None = None) -> None:
        self.cache_dir = cache_dir
        self._fetch = fetch
        self._modules: dict[str, Any] = {}
        self.auth = auth
        if cache_dir is not None:
            try:
                cacheauth.private_dir(Path(cache_dir))
            except OSError:
                pass  # an unusable cache directory only costs compilations (the engine skips the write)

    def _load(self, eng: Any, wasm: bytes, fmt: str) -> Any:
        auth = self.auth or (cacheauth.for_dir(self.cache_dir) if self.cache_dir is not None else None)
        if auth is None:
            return eng.Module.load(wasm, fmt, cache_dir=self.cache_dir)

        def reject(path: str, why: str) -> None:
            auth.rejected(path, why, "recompiled")

        return eng.Module.load(wasm, fmt, cache_dir=self.cache_dir, cache_key=auth.subkey("cwasm"),
                               on_cache_reject=reject)

    def get(self, module_id: str, fmt: str) -> Any:
        eng = engine()
        mod = self._modules.get(module_id)
        if mod is None:
            wasm = self._fetch(module_id)
            if wasm is None:
                raise NotFound(f"Module {module_id} not found")
            try:
                mod = self._load(eng, wasm, fmt)
            except eng.EngineError as exc:
                raise Invalid(f"Module {module_id} cannot be loaded: {exc}") from None
            self._modules[module_id] = mod
        return mod


def instance_limits(pid: str, process_tags: list[tuple[str, str]], module_tags: list[tuple[str, str]], *,
                    memory_max: int, compute_max: int, timeout_s: float | None) -> tuple[str, dict[str, Any]]:
    """(Module-Format, engine instance limits) of a process, or LimitExceeded/Invalid (`module_limits`)."""
    fmt, mem, compute = module_limits(pid, process_tags, module_tags, memory_max=memory_max,
                                      compute_max=compute_max)
    return fmt, {"memory_limit": mem, "compute_limit": compute, "timeout_s": timeout_s}


def process_env(*, pid: str, process_owner: str, process_tags: list[tuple[str, str]], module_id: str,
                module_owner: str, module_tags: list[tuple[str, str]]) -> bytes:
    """The env JSON every evaluation of the process gets."""
    return legacy.dumps(legacy.env_object(pid=pid, process_owner=process_owner, process_tags=process_tags,
                                          module_id=module_id, module_owner=module_owner, module_tags=module_tags))
