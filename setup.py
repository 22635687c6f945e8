"""Builds the native core `cu._native` (C++17, pybind11) from native/.

wasmtime is not linked at build time: the wheel ships `_libwasmtime.so` without headers or SONAME, so the
extension dlopen()s it at import time and resolves the C API subset it declares (native/wasmtime_api.h).
"""

import os
import shutil
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
    libraries=["crypto", "zstd", "dl"],
    extra_compile_args=["-O2", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    define_macros=[("AOCU_NATIVE_VERSION", '"0.1.0"')],
)


class build_ext(_build_ext):
    """In-place builds replace the extension by rename: overwriting the file that running processes have
    mapped (tests, a node under development) makes them crash."""

    def copy_extensions_to_source(self) -> None:
        build_py = self.get_finalized_command("build_py")
        for extension in self.extensions:
            inplace_file, regular_file = self._get_inplace_equivalent(build_py, extension)
            tmp = inplace_file + ".tmp"
            shutil.copyfile(regular_file, tmp)
            os.chmod(tmp, 0o755)
            os.replace(tmp, inplace_file)


setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
