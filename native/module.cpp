// Entry point of the `cu._native` extension.
#include <pybind11/pybind11.h>

#include "py_modules.h"

PYBIND11_MODULE(_native, m) {
  m.doc() = "aocu native core: wasmtime engine, host functions, hashing";
  m.attr("__version__") = AOCU_NATIVE_VERSION;
  aocu_register_hash(m);
  aocu_register_engine(m);
  aocu_register_merkle(m);
  aocu_register_transform(m);
  aocu_register_fast(m);
  aocu_register_pagedelta(m);
}
