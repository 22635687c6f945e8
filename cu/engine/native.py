"""Loads `cu._native.engine` and points it at the wasmtime C library shipped in the pinned wheel.

The extension does not link wasmtime: the wheel's `_libwasmtime.so` has no headers or SONAME, so we find it
next to the installed `wasmtime` package, check that package is the pinned version, and let the native side
dlopen() it and resolve the C API subset it declares (native/wasmtime_api.h).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from types import ModuleType

from cu.engine.errors import EngineError

WASMTIME_VERSION = "50.0.1"


def _library_path() -> Path:
    spec = importlib.util.find_spec("wasmtime")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(f"the wasmtime package is not installed (pip install wasmtime=={WASMTIME_VERSION})")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    for name in ("linux-x86_64", "linux-aarch64"):
        lib = pkg / name / "_libwasmtime.so"
        if lib.is_file():
            return lib
    raise EngineError(f"no _libwasmtime.so found in {pkg}")


def _load() -> ModuleType:
    try:
        version = importlib.metadata.version("wasmtime")
    except importlib.metadata.PackageNotFoundError as exc:
        raise EngineError("the wasmtime package is not installed") from exc
    if version != WASMTIME_VERSION:
        raise EngineError(
            f"wasmtime {version} is installed but aocu's native core is built against the C API of "
            f"wasmtime {WASMTIME_VERSION} (pip install wasmtime=={WASMTIME_VERSION})"
        )
    from cu import _native

    eng = getattr(_native, "engine", None)
    if eng is None:
        raise EngineError("this build of cu._native has no engine (rebuild: python setup.py build_ext --inplace)")
    if not eng.initialized():
        try:
            eng.init(str(_library_path()))
        except ImportError as exc:
            raise EngineError(str(exc)) from exc
    return eng


native: ModuleType = _load()
