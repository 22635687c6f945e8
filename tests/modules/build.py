"""Build the project's AO test process modules from source (emscripten 3.1.6 + Lua 5.3).

Outputs are cached in tests/.cache/modules/, keyed by a hash of every recipe input (sources, flags,
emcc version, Lua tarball), so a second build() is a path lookup.

    python -m tests.modules.build [--all | NAME ...]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.modules import wasmedit

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("AOCU_TEST_CACHE", REPO / "tests" / ".cache"))
MODULE_CACHE = CACHE / "modules"
EMCACHE = CACHE / "emcache"
LUPA_VERSION = "2.8"
RECIPE_VERSION = "4"  # bump to invalidate every cached module

LUA_SKIP = {"lua.c", "luac.c", "ltests.c"}

# Lua 5.3.6 as shipped (64-bit integers, doubles); how errors unwind is chosen per module (lua_eh).
LUA_CFLAGS = ["-DLUA_COMPAT_5_2"]

# No SIMD, bulk memory, saturating truncation or reference types: keeps the code MVP + sign-ext so the
# -metering rewrite (which knows only MVP opcodes) can be applied (wasm32 modules and lua64-sjlj).
MVP_CFLAGS = ["-mno-simd128", "-mno-bulk-memory", "-mno-nontrapping-fptoint", "-mno-reference-types"]

COMMON_LDFLAGS = [
    "-sALLOW_MEMORY_GROWTH=1",
    "-sDETERMINISTIC=1",
    "-sFORCE_FILESYSTEM=1",
    "-sERROR_ON_UNDEFINED_SYMBOLS=1",
    "-sENVIRONMENT=node",
    "-sMODULARIZE=1",
]


# emcc 3.1.6 runs its wasm64 struct-info generator under node with --experimental-wasm-bigint, a flag
# node >= 16 rejects (BigInt integration is always on); it needs --experimental-wasm-memory64 instead.
NODE_WRAPPER = """#!/bin/bash
args=()
for a in "$@"; do
  if [[ $a == --experimental-wasm-bigint ]]; then args+=(--experimental-wasm-memory64); else args+=("$a"); fi
done
exec {node} "${{args[@]}}"
"""


class BuildError(RuntimeError):
    """A module recipe could not be built (missing toolchain, download or compiler failure)."""


@dataclass(frozen=True)
class ModuleInfo:
    name: str
    module_format: str  # the Module-Format tag a process using this module carries
    memory64: bool
    exceptions: str  # "js-sjlj" (invoke_* + _emscripten_throw_longjmp) or "wasm-legacy-eh"
    boot: str  # "main" (host calls main at init) or "lazy" (first handle() boots Lua)
    description: str
    cflags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()
    lua_eh: str = "setjmp"  # how Lua's LUAI_TRY/THROW are built: "setjmp" (C, emscripten lowers
    # setjmp/longjmp), "cxx" (Lua compiled as C++: try/catch/throw) or "invoke" (src/sjlj.c)
    compat: int = 2  # import-name family of src/compat.c: 1, 2, 3 or 4 (format 4 and wasm64)
    minify_format1: bool = False  # rename imports/exports to format 1's letters (wasmedit.py)
    exports: tuple[str, ...] = field(default=())


_EXPORTS_F2 = ("_handle", "_main", "_malloc", "_free", "___errno_location", "_setThrew",
               "_emscripten_stack_init", "_emscripten_stack_get_end", "_emscripten_stack_get_current",
               "___wasm_call_ctors")

_EXPORTS_F4 = ("_handle", "_main", "_malloc", "_free", "_emscripten_stack_init", "_emscripten_stack_get_end",
               "_emscripten_stack_get_current", "__emscripten_stack_alloc", "__emscripten_stack_restore",
               "___wasm_call_ctors")

MODULES: dict[str, ModuleInfo] = {
    "lua32": ModuleInfo(
        name="lua32",
        module_format="wasm32-unknown-emscripten2",
        memory64=False,
        exceptions="js-sjlj",
        boot="main",
        description="wasm32 Lua 5.3 process; emscripten 3.1.6 native imports (format 2 names: system, "
        "abort, emscripten_memcpy_big, getTempRet0/setTempRet0); JS-style SJLJ via invoke_*; "
        "main() boots Lua (handle() also boots lazily if main was not called); MVP + sign-ext only",
        cflags=tuple(MVP_CFLAGS) + ("-sSUPPORT_LONGJMP=emscripten",),
        ldflags=("-sSUPPORT_LONGJMP=emscripten", "-sWASM_BIGINT=0", "-sINITIAL_MEMORY=16MB",
                 "-sMAXIMUM_MEMORY=512MB", "-sTOTAL_STACK=1MB"),
        exports=_EXPORTS_F2,
    ),
    "lua64": ModuleInfo(
        name="lua64",
        module_format="wasm64-unknown-emscripten-draft_2024_02_15",
        memory64=True,
        exceptions="wasm-legacy-eh",
        boot="lazy",
        description="wasm64 (memory64) Lua 5.3 process; Lua errors via wasm exception handling "
        "(Lua compiled as C++ with -fwasm-exceptions: LUAI_TRY/THROW are try/catch/throw, emitted as the "
        "legacy try/catch/throw opcodes with one (i64) tag, like HyperBEAM's aos-2-pure builds); wasm64 glue import names; lazy Lua boot in handle()",
        cflags=("-fwasm-exceptions", "-sSUPPORT_LONGJMP=0"),
        ldflags=("-fwasm-exceptions", "-sSUPPORT_LONGJMP=0", "-sINITIAL_MEMORY=16MB",
                 "-sMAXIMUM_MEMORY=1GB", "-sTOTAL_STACK=1MB"),
        lua_eh="cxx",
        compat=4,
        exports=_EXPORTS_F4,
    ),
    "lua32-f1": ModuleInfo(
        name="lua32-f1",
        module_format="wasm32-unknown-emscripten",
        memory64=False,
        exceptions="js-sjlj",
        boot="main",
        description="the lua32 process with format 1's minified names: the 30 imports a.a..a.D and "
        "exports E..O of ao-ABI §3.1 (renamed after linking); main() boots Lua; MVP + sign-ext only",
        cflags=tuple(MVP_CFLAGS) + ("-sSUPPORT_LONGJMP=emscripten",),
        ldflags=("-sSUPPORT_LONGJMP=emscripten", "-sWASM_BIGINT=0", "-sINITIAL_MEMORY=16MB",
                 "-sMAXIMUM_MEMORY=500MB", "-sTOTAL_STACK=1MB"),
        compat=1,
        minify_format1=True,
        exports=_EXPORTS_F2,
    ),
    "lua32-lazy": ModuleInfo(
        name="lua32-lazy",
        module_format="wasm32-unknown-emscripten4",
        memory64=False,
        exceptions="js-sjlj",
        boot="lazy",
        description="the lua32 process with format-4 import names (_abort_js, _emscripten_system, "
        "_emscripten_memcpy_js, 4-argument _tzset_js, no tempRet imports) and lazy Lua boot, no ASYNCIFY; "
        "MVP + sign-ext only, so it also serves as a wasm32-unknown-emscripten-metering module",
        cflags=tuple(MVP_CFLAGS) + ("-sSUPPORT_LONGJMP=emscripten",),
        ldflags=("-sSUPPORT_LONGJMP=emscripten", "-sWASM_BIGINT=0", "-sINITIAL_MEMORY=16MB",
                 "-sMAXIMUM_MEMORY=512MB", "-sTOTAL_STACK=1MB"),
        compat=4,
        exports=_EXPORTS_F4 + ("_setThrew",),
    ),
    "lua32-f3": ModuleInfo(
        name="lua32-f3",
        module_format="wasm32-unknown-emscripten3",
        memory64=False,
        exceptions="js-sjlj",
        boot="main",
        description="the lua32 process with format-3 import names (abort, _emscripten_system, "
        "emscripten_memcpy_js, emscripten_date_now, 4-argument _tzset_js); main() boots Lua",
        cflags=tuple(MVP_CFLAGS) + ("-sSUPPORT_LONGJMP=emscripten",),
        ldflags=("-sSUPPORT_LONGJMP=emscripten", "-sWASM_BIGINT=0", "-sINITIAL_MEMORY=16MB",
                 "-sMAXIMUM_MEMORY=512MB", "-sTOTAL_STACK=1MB"),
        compat=3,
        exports=_EXPORTS_F4 + ("_setThrew",),
    ),
    "lua64-sjlj": ModuleInfo(
        name="lua64-sjlj",
        module_format="wasm64-unknown-emscripten-draft_2024_10_16-metering",
        memory64=True,
        exceptions="js-sjlj",
        boot="lazy",
        description="wasm64 Lua 5.3 process with JS-style SJLJ (invoke_vjj + _emscripten_throw_longjmp, written out "
        "in src/sjlj.c because clang 14's wasm64 setjmp lowering is broken), "
        "no EH opcodes, MVP + sign-ext + memory64 only (input for the wasm64 -metering rewrite); lazy boot",
        cflags=tuple(MVP_CFLAGS) + ("-sSUPPORT_LONGJMP=0",),
        # compiled without setjmp lowering; linked with longjmp support so the JS library accepts
        # the _emscripten_throw_longjmp import that src/sjlj.c declares
        ldflags=("-sSUPPORT_LONGJMP=emscripten", "-sINITIAL_MEMORY=16MB",
                 "-sMAXIMUM_MEMORY=1GB", "-sTOTAL_STACK=1MB"),
        lua_eh="invoke",
        compat=4,
        exports=_EXPORTS_F4 + ("_setThrew",),
    ),
}


def _run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise BuildError(f"command failed ({proc.returncode}): {' '.join(cmd[:6])} ...\n{tail}")
    return proc.stdout


def _log(msg: str) -> None:
    print(f"[modules] {msg}", file=sys.stderr, flush=True)


def emcc_path() -> str:
    path = shutil.which("emcc")
    if path is None:
        raise BuildError("emcc not found: install Debian's emscripten package (apt-get install emscripten; "
                         "scripts/install.sh does this for the test setup)")
    return path


def emxx_path() -> str:
    path = shutil.which("em++")
    if path is None:
        raise BuildError("em++ not found: install Debian's emscripten package")
    return path


@functools.lru_cache(maxsize=1)
def emcc_version() -> str:
    out = _run([emcc_path(), "--version"])
    return out.splitlines()[0].strip()


def emscripten_env(memory64: bool) -> dict[str, str]:
    """Environment for emcc.

    Debian's emscripten ships a frozen cache with wasm32 system libraries only. wasm32 modules use it
    as is; wasm64 (-sMEMORY64) needs its system libraries built once (about 90 s), so those builds use
    a copy of the config with FROZEN_CACHE = False and a writable CACHE under tests/.cache/emcache.
    """
    env = dict(os.environ)
    for var in ("EM_CACHE", "EM_FROZEN_CACHE", "EM_CONFIG"):
        env.pop(var, None)
    # emcc's JS optimizer needs Debian's node-acorn; a non-Debian node does not search /usr/share/nodejs.
    node_path = [p for p in env.get("NODE_PATH", "").split(os.pathsep) if p]
    if "/usr/share/nodejs" not in node_path:
        env["NODE_PATH"] = os.pathsep.join([*node_path, "/usr/share/nodejs"])
    if not memory64:
        return env
    root = Path(os.path.realpath(emcc_path())).parent
    debian_config = root / ".emscripten"
    if not debian_config.is_file():
        debian_config = Path("/usr/share/emscripten/.emscripten")
    if not debian_config.is_file():
        raise BuildError(f"emscripten config not found next to {root}")
    cache = EMCACHE / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    config = EMCACHE / "emscripten_config.py"
    node = EMCACHE / "node"
    node_text = NODE_WRAPPER.format(node=shutil.which("node") or "/usr/bin/node")
    if not node.exists() or node.read_text() != node_text:
        node.write_text(node_text)
        node.chmod(0o755)
    lines = [ln for ln in debian_config.read_text().splitlines()
             if not ln.strip().startswith(("FROZEN_CACHE", "CACHE", "NODE_JS"))]
    lines += ["FROZEN_CACHE = False", f"CACHE = {str(cache)!r}", f"NODE_JS = {str(node)!r}"]
    new = "\n".join(lines) + "\n"
    if not config.exists() or config.read_text() != new:
        config.write_text(new)
    env["EM_CONFIG"] = str(config)
    return env


def lua_sources() -> Path:
    """Lua 5.3 sources from the PyPI sdist of lupa (third-party/lua53), downloaded once."""
    dest = CACHE / f"lua53-lupa-{LUPA_VERSION}"
    if (dest / "lua.h").is_file():
        return dest
    with _locked(CACHE / ".lua53.lock"):
        if (dest / "lua.h").is_file():
            return dest
        return _fetch_lua_sources(dest)


def _fetch_lua_sources(dest: Path) -> Path:
    dl = CACHE / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    tarball = dl / f"lupa-{LUPA_VERSION}.tar.gz"
    if not tarball.is_file():
        _log(f"downloading lupa {LUPA_VERSION} sdist with pip (Lua 5.3 sources; takes about a minute)")
        # --no-binary lupa (not :all:) so pip's metadata step may use wheels for lupa's build deps.
        _run([sys.executable, "-m", "pip", "download", "--no-binary", "lupa", "--no-deps",
              f"lupa=={LUPA_VERSION}", "-d", str(dl)])
        if not tarball.is_file():
            raise BuildError(f"pip download did not produce {tarball}")
    prefix = f"lupa-{LUPA_VERSION}/third-party/lua53/"
    tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix="lua53."))
    with tarfile.open(tarball) as tf:
        for member in tf.getmembers():
            if member.isfile() and member.name.startswith(prefix) and "/" not in member.name[len(prefix):]:
                data = tf.extractfile(member)
                assert data is not None
                (tmp / member.name[len(prefix):]).write_bytes(data.read())
    if not (tmp / "lua.h").is_file():
        raise BuildError(f"{tarball} has no {prefix}lua.h")
    tmp.chmod(0o755)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def _lua_c_files(lua_dir: Path) -> list[Path]:
    return sorted(p for p in lua_dir.glob("l*.c") if p.name not in LUA_SKIP)


def _bundle_header(out: Path) -> None:
    """Embed the Lua sources as C byte arrays (no escaping pitfalls)."""
    lua_dir = SRC / "lua"
    mods = [("json", lua_dir / "json.lua"), (".process", lua_dir / "process.lua")]
    lines = ["/* generated by tests/modules/build.py */", "#include <stddef.h>"]

    def arr(ident: str, data: bytes) -> None:
        body = ",".join(str(b) for b in data + b"\0")
        lines.append(f"static const char {ident}[] = {{{body}}};")

    for i, (_, path) in enumerate(mods):
        arr(f"ao_src_{i}", path.read_bytes())
    main = (lua_dir / "main.lua").read_bytes()
    arr("ao_main_src", main)
    lines.append(f"static const size_t ao_main_len = {len(main)};")
    lines.append("static const struct { const char *name; const char *chunkname; const char *src; size_t len; }"
                 " ao_bundle[] = {")
    for i, (name, path) in enumerate(mods):
        lines.append(f'  {{"{name}", "={path.stem}", ao_src_{i}, {len(path.read_bytes())}}},')
    lines.append("};")
    lines.append(f"#define AO_BUNDLE_N {len(mods)}")
    out.write_text("\n".join(lines) + "\n")


def _flags(info: ModuleInfo) -> tuple[list[str], list[str]]:
    cflags = ["-O2", *LUA_CFLAGS, *info.cflags]
    if info.memory64:
        cflags.append("-sMEMORY64=1")
    cflags.append(f"-DAO_COMPAT_FORMAT={info.compat}")
    ldflags = [*cflags, *COMMON_LDFLAGS, *info.ldflags, "--js-library", str(SRC / "compat.js"),
               "-sEXPORTED_FUNCTIONS=" + ",".join(info.exports)]
    return cflags, ldflags


def _recipe_files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*") if p.is_file()) + [Path(__file__), HERE / "wasmedit.py"]


def export_name(info: ModuleInfo, name: str) -> str:
    """The name under which module `info` exports `name` (format 1 uses minified letters)."""
    return wasmedit.FORMAT1_EXPORTS[name] if info.minify_format1 else name


def cache_key(info: ModuleInfo) -> str:
    h = hashlib.sha256()
    h.update(f"recipe={RECIPE_VERSION}\nemcc={emcc_version()}\nlupa={LUPA_VERSION}\n".encode())
    cflags, ldflags = _flags(info)
    h.update(repr((info, cflags, ldflags)).encode())
    for p in _recipe_files():
        h.update(p.relative_to(HERE).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def cached_path(name: str) -> Path:
    info = _info(name)
    return MODULE_CACHE / f"{name}-{cache_key(info)}.wasm"


def _info(name: str) -> ModuleInfo:
    try:
        return MODULES[name]
    except KeyError:
        raise BuildError(f"unknown test module {name!r}; known: {', '.join(MODULES)}") from None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise builds of the same artefact across processes (parallel test runs share the cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build(name: str) -> Path:
    """Return the path of module `name`, building it first if it is not cached."""
    info = _info(name)
    out = cached_path(name)
    if out.is_file():
        return out
    with _locked(MODULE_CACHE / f".{name}.lock"):
        if out.is_file():  # built by another process while we waited
            return out
        _build(info, out)
    for old in MODULE_CACHE.glob(f"{name}-*.wasm"):
        if old != out and re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{16}}\.wasm", old.name):
            old.unlink(missing_ok=True)  # superseded recipe outputs
    return out


def _build(info: ModuleInfo, out: Path) -> None:
    name = info.name
    env = emscripten_env(info.memory64)
    lua_dir = lua_sources()
    t0 = time.monotonic()
    first = "; the first wasm64 build also builds emscripten's wasm64 system libraries" if info.memory64 else ""
    _log(f"building {name} ({info.module_format}){first}")
    with tempfile.TemporaryDirectory(dir=CACHE, prefix=f"build-{name}.") as tmpd:
        tmp = Path(tmpd)
        _bundle_header(tmp / "bundle.h")
        cflags, ldflags = _flags(info)
        inc = [f"-I{lua_dir}", f"-I{tmp}", f"-I{SRC}"]
        lua_files = [str(p) for p in _lua_c_files(lua_dir)] + [str(SRC / "process.c")]
        shim = [str(SRC / "compat.c")]
        if info.compat >= 3:
            shim.append(str(SRC / "stack4.S"))
        groups: list[tuple[str, list[str], list[str]]] = []
        if info.lua_eh == "cxx":
            groups.append((emxx_path(), ["-x", "c++", "-std=c++17"], lua_files))
        elif info.lua_eh == "invoke":
            groups.append((emcc_path(), ["-include", str(SRC / "sjlj.h")], lua_files))
            shim.append(str(SRC / "sjlj.c"))
        else:
            groups.append((emcc_path(), [], lua_files))
        groups.append((emcc_path(), [], shim))
        for i, (driver, extra, files) in enumerate(groups):
            objdir = tmp / f"obj{i}"
            objdir.mkdir()
            _run([driver, *cflags, *extra, *inc, "-c", *files], env=env, cwd=objdir)
        objs = sorted(str(p) for p in tmp.glob("obj*/*.o"))
        linker = emxx_path() if info.lua_eh == "cxx" else emcc_path()
        _run([linker, *ldflags, *objs, "-o", str(tmp / f"{name}.js")], env=env, cwd=tmp)
        wasm = tmp / f"{name}.wasm"
        if not wasm.is_file():
            raise BuildError(f"emcc produced no {wasm.name}")
        if info.minify_format1:
            try:
                wasm.write_bytes(wasmedit.minify_format1(wasm.read_bytes()))
            except ValueError as e:
                raise BuildError(f"{name}: {e}") from e
        staged = tmp / "staged.wasm"
        shutil.copyfile(wasm, staged)
        os.replace(staged, out)
    _log(f"built {name} in {time.monotonic() - t0:.0f}s -> {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.modules.build", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="module names: " + ", ".join(MODULES))
    ap.add_argument("--all", action="store_true", help="build every module")
    args = ap.parse_args(argv)
    names = list(MODULES) if args.all or not args.names else args.names
    try:
        for name in names:
            path = build(name)
            print(f"{name}\t{MODULES[name].module_format}\t{path}")
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
