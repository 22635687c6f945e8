"""Builds the native core `cu._native` (C++17, pybind11) from native/.

wasmtime is not linked at build time: the wheel ships `_libwasmtime.so` without headers or SONAME, so the
extension dlopen()s it at import time and resolves the C API subset it declares (native/wasmtime_api.h).
"""

import os
import shlex
import shutil
import subprocess
import sysconfig
from glob import glob

from pybind11.setup_helpers import Pybind11Extension
from pybind11.setup_helpers import build_ext as _build_ext
from setuptools import setup

sources = sorted(glob("native/**/*.cpp", recursive=True))

ext = Pybind11Extension(
    "cu._native",
    sources,
    include_dirs=["native"],
    cxx_std=17,
    libraries=["crypto", "sodium", "zstd", "dl"],
    extra_compile_args=["-O2", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    define_macros=[("AOCU_NATIVE_VERSION", '"0.1.0"')],
)


# System headers the extension includes and the Debian package of each: checked before compiling, so that a
# missing one is one line naming the package instead of a compiler error deep in pip's output.
SYSTEM_HEADERS: tuple = (("zstd.h", "libzstd-dev"), ("openssl/evp.h", "libssl-dev"), ("sodium.h", "libsodium-dev"),
                          ("Python.h", "python3-dev"))


def compiler_include_dirs(cxx: str | None = None) -> list[str] | None:
    """The C++ compiler's #include <...> search list (`c++ -E -v`), or None when it cannot be asked."""
    cmd = shlex.split(cxx or os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++")
    if not cmd or shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run([*cmd, "-E", "-x", "c++", "-v", "-"], input="", capture_output=True, text=True,
                             timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.splitlines()
    try:
        start = lines.index("#include <...> search starts here:") + 1
        end = lines.index("End of search list.", start)
    except ValueError:
        return None
    return [ln.strip().split(" (")[0] for ln in lines[start:end]]


def missing_headers(include_dirs: list[str], headers: tuple = SYSTEM_HEADERS) -> list[tuple[str, str]]:
    """The (header, Debian package) pairs found in none of `include_dirs`."""
    return [(h, pkg) for h, pkg in headers if not any(os.path.isfile(os.path.join(d, h)) for d in include_dirs)]


def check_system_headers(include_dirs: list[str] | None = None) -> None:
    """SystemExit with one line naming the Debian packages to install when a header is missing."""
    if include_dirs is None:
        found = compiler_include_dirs()
        if found is None:
            raise SystemExit("aocu build: no C++ compiler found: install build-essential "
                             "(sudo apt-get install build-essential), or run scripts/install.sh")
        include_dirs = [*found, *ext.include_dirs, sysconfig.get_paths()["include"]]
    missing = missing_headers(include_dirs)
    if missing:
        pkgs = " ".join(dict.fromkeys(pkg for _, pkg in missing))
        raise SystemExit(f"aocu build: missing {', '.join(h for h, _ in missing)}: install the Debian "
                         f"package{'s' if ' ' in pkgs else ''} {pkgs} (sudo apt-get install {pkgs}), "
                         "or run scripts/install.sh")


class build_ext(_build_ext):
    """In-place builds replace the extension by rename: overwriting the file that running processes have
    mapped (tests, a node under development) makes them crash. The system headers are checked first."""

    def run(self) -> None:
        check_system_headers()
        super().run()

    def copy_extensions_to_source(self) -> None:
        build_py = self.get_finalized_command("build_py")
        for extension in self.extensions:
            inplace_file, regular_file = self._get_inplace_equivalent(build_py, extension)
            tmp = inplace_file + ".tmp"
            shutil.copyfile(regular_file, tmp)
            os.chmod(tmp, 0o755)
            os.replace(tmp, inplace_file)


setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
