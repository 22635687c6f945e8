// invoke_* host functions (see docs/ABI.md, host imports): call a table entry with the stack pointer saved,
// turning a longjmp that unwinds through it into setThrew(1, 0) as the emscripten glue does. Split out of
// host.cpp: the only host function that re-enters wasm with a checked call and rethrows traps.
#include <cstring>
#include <string>

#include "engine/host_internal.h"

namespace aocu::engine::hostfn {

using wt::api;

void h_invoke(HostState* st, const Args& a) {
  const std::string& sig = a.b->sig;
  size_t np = a.nparams();
  if (!st->has_table) throw HostTrap{"invoke_*: module exports no function table"};
  // save the stack pointer
  wasmtime_val_raw_t sp[1];
  sp[0].i64 = 0;
  bool have_sp = st->f_stack_save.store_id && st->f_stack_restore.store_id;
  if (have_sp) {
    wasm_trap_t* trap = nullptr;
    wasmtime_error_t* e = api->wasmtime_func_call_unchecked(st->ctx, &st->f_stack_save, sp, 1, &trap);
    if (e) throw HostTrap{wt::take_error(e)};
    if (trap) throw HostTrap{wt::take_trap(trap, nullptr, nullptr)};
  }
  uint64_t idx = a.u(0);
  wasmtime_val_t fv;
  std::memset(&fv, 0, sizeof fv);
  if (!api->wasmtime_table_get(st->ctx, &st->table, idx, &fv) || fv.kind != wt::WASMTIME_FUNCREF)
    throw HostTrap{"invoke_*: table index out of bounds"};
  if (fv.of.funcref.store_id == 0) throw HostTrap{"invoke_*: call to null table entry"};
  wasmtime_val_t args[32];
  wasmtime_val_t results[1];
  size_t nargs = np - 1;
  if (nargs > 32) throw HostTrap{"invoke_*: too many arguments"};
  for (size_t k = 1; k < np; ++k) {
    wasmtime_val_t& v = args[k - 1];
    std::memset(&v, 0, sizeof v);
    switch (sig[k]) {
      case 'i': v.kind = wt::WASMTIME_I32; v.of.i32 = a.a[k].i32; break;
      case 'j': v.kind = wt::WASMTIME_I64; v.of.i64 = a.a[k].i64; break;
      case 'f': v.kind = wt::WASMTIME_F32; v.of.f32 = a.a[k].f32; break;
      case 'd': v.kind = wt::WASMTIME_F64; v.of.f64 = a.a[k].f64; break;
      default: throw HostTrap{"invoke_*: unsupported argument type"};
    }
  }
  size_t nres = sig.size() - np - 1;
  std::memset(results, 0, sizeof results);
  wasm_trap_t* trap = nullptr;
  // checked call: wasmtime verifies the table entry's type against the invoke signature
  wasmtime_error_t* e = api->wasmtime_func_call(st->ctx, &fv.of.funcref, args, nargs, results, nres, &trap);
  // A trap raised by a host function (e.g. the longjmp sentinel) comes back as an error, a wasm trap as `trap`.
  if (!trap && !e) {
    if (nres == 1) {
      switch (sig.back()) {
        case 'i': a.a[0].i64 = 0; a.a[0].i32 = results[0].of.i32; break;
        case 'j': a.a[0].i64 = results[0].of.i64; break;
        case 'f': a.a[0].i64 = 0; a.a[0].f32 = results[0].of.f32; break;
        case 'd': a.a[0].f64 = results[0].of.f64; break;
      }
    }
    return;
  }
  // something unwound: restore the stack pointer first
  if (have_sp) {
    wasm_trap_t* t2 = nullptr;
    wasmtime_error_t* e2 = api->wasmtime_func_call_unchecked(st->ctx, &st->f_stack_restore, sp, 1, &t2);
    if (e2) wt::take_error(e2);
    if (t2) wt::take_trap(t2, nullptr, nullptr);
  }
  if (!st->longjmp_pending) {
    // not a longjmp: re-raise (keeps the original trap message; host reasons survive in trap_reason)
    wasmtime_trap_code_t code = 0;
    bool has_code = false;
    std::string msg = trap ? wt::take_trap(trap, &code, &has_code) : wt::take_error(e);
    if (trap && e) wt::take_error(e);
    if (has_code && code == wt::TRAP_OUT_OF_FUEL) throw HostTrap{"out of gas!"};
    if (has_code && code == wt::TRAP_INTERRUPT) throw HostTrap{"wasm execution interrupted (wall-clock limit)"};
    if (!st->trap_reason.empty()) throw HostTrap{st->trap_reason};
    throw HostTrap{clean_message(msg)};
  }
  if (trap) wt::take_trap(trap, nullptr, nullptr);
  if (e) wt::take_error(e);
  st->longjmp_pending = false;
  st->trap_reason.clear();
  if (!st->f_set_threw.store_id) throw HostTrap{"invoke_*: longjmp without setThrew export"};
  wasmtime_val_raw_t tr[2];
  if (st->mem64) tr[0].i64 = 1; else { tr[0].i64 = 0; tr[0].i32 = 1; }
  tr[1].i64 = 0;
  wasm_trap_t* t3 = nullptr;
  wasmtime_error_t* e3 = api->wasmtime_func_call_unchecked(st->ctx, &st->f_set_threw, tr, 2, &t3);
  if (e3) throw HostTrap{wt::take_error(e3)};
  if (t3) throw HostTrap{wt::take_trap(t3, nullptr, nullptr)};
  if (nres == 1) a.a[0].i64 = 0;
}

}  // namespace aocu::engine::hostfn
