// Internal interface between the memory64 lowering (mem64.cpp) and its whole-module call analysis
// (mem64_calls.cpp). Not part of transform.h.
#pragma once
#include <cstdint>
#include <vector>

#include "transform/wasm_binary.h"

namespace aocu::transform::mem64 {

// Parameter and result counts of a function or type, and which parameters are i64 (possible addresses).
struct Sig {
  uint32_t params = 0, results = 0;
  std::vector<bool> i64;
};

// What the whole module tells each function body (lower_memory64): signatures for calls, and per function
// which i64 parameters hold a value v with R(v) (see `known` in lower_body) on entry.
struct Interproc {
  std::vector<Sig> funcs, types;           // by function index (imports first) / by type index
  std::vector<std::vector<bool>> entry;    // by function index: parameter known on entry
  std::vector<std::vector<bool>> passed;   // out: parameters every direct call site seen so far passes known
};

// Rewrites one function body (after its size); with `ip.passed` non-empty it also records, per callee, the
// parameters this body's direct calls pass known (analyse runs it that way, discarding the code).
wasm::Bytes lower_body(wasm::Reader& r, uint32_t func_no, bool branch, Interproc& ip);

// Signatures and parameter entry facts for every function of `m` (mem64_calls.cpp).
Interproc analyse(const wasm::Module& m, const std::vector<wasm::FuncType>& types,
                  const std::vector<uint32_t>& func_types, bool branch);

}  // namespace aocu::transform::mem64
