// Registration hooks: each area of the native core binds itself; module.cpp only wires them together.
#pragma once
#include <pybind11/pybind11.h>

void aocu_register_hash(pybind11::module_& m);
