"""Builds the native core `cu._native` (C++17, pybind11) from native/.

wasmtime is not linked at build time: the wheel ships `_libwasmtime.so` without headers or SONAME, so the
extension dlopen()s it at import time and resolves the C API subset it declares (native/wasmtime_api.h).
"""
from glob import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext
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

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
