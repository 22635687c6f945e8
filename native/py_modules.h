// Registration hooks: each area of the native core binds itself; module.cpp only wires them together.
#pragma once
#include <pybind11/pybind11.h>

void aocu_register_hash(pybind11::module_& m);
void aocu_register_merkle(pybind11::module_& m);
void aocu_register_engine(pybind11::module_& m);
void aocu_register_transform(pybind11::module_& m);
void aocu_register_fast(pybind11::module_& m);
void aocu_register_pagedelta(pybind11::module_& m);
