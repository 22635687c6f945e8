// Host functions for the legacy AO module formats (see docs/ABI.md, host imports). Every callback catches
// everything and turns it into a wasm trap: no C++ exception may unwind through wasmtime frames.
// This file: trap/signature helpers and the emscripten runtime, heap, environment, exit, metering and
// WeaveDrive imports. The rest is split by area: host_time.cpp, host_fs.cpp (fd_*/MEMFS), host_invoke.cpp,
// host_registry.cpp (import table and resolution), host_state.cpp (snapshot serialisation).
#include "engine/host.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "engine/host_internal.h"

namespace aocu::engine {

using wt::api;

std::string clean_message(const std::string& msg) {
  // wasmtime errors carry a backtrace and a "Caused by:" chain: keep the root cause only
  size_t k = msg.rfind("Caused by:");
  std::string s = k == std::string::npos ? msg : msg.substr(k + 10);
  size_t b = s.find_first_not_of(" \n\t");
  if (b == std::string::npos) return msg;
  s = s.substr(b);
  size_t e = s.find_last_not_of(" \n\t");
  s = s.substr(0, e + 1);
  if (k == std::string::npos) {
    size_t nl = s.find('\n');
    if (nl != std::string::npos) s = s.substr(0, nl);
  } else if (s.rfind("0: ", 0) == 0) {
    // a numbered cause chain ("0: memory fault at wasm address ... \n 1: wasm trap: out of bounds memory
    // access", from a guard-page fault): keep its last cause, so the error does not depend on whether the
    // engine checked bounds explicitly (memory64) or with guard pages (32-bit / lowered memory64)
    size_t nl = s.rfind('\n');
    std::string last = s.substr(nl + 1);
    size_t b2 = last.find_first_not_of(" \t0123456789");
    if (b2 != std::string::npos && last.compare(b2, 2, ": ") == 0) s = last.substr(b2 + 2);
  }
  return s;
}

wasm_trap_t* make_trap(const std::string& msg) { return api->wasmtime_trap_new(msg.data(), msg.size()); }

std::string sig_of(const wasm_functype_t* ft) {
  auto enc = [](const wasm_valtype_vec_t* v) {
    std::string s;
    for (size_t i = 0; i < v->size; ++i) {
      switch (api->wasm_valtype_kind(v->data[i])) {
        case wt::WASM_I32: s += 'i'; break;
        case wt::WASM_I64: s += 'j'; break;
        case wt::WASM_F32: s += 'f'; break;
        case wt::WASM_F64: s += 'd'; break;
        default: s += 'x';
      }
    }
    return s;
  };
  return enc(api->wasm_functype_params(ft)) + ":" + enc(api->wasm_functype_results(ft));
}

uint8_t* HostState::mem_base() const { return api->wasmtime_memory_data(ctx, &memory); }
size_t HostState::mem_size() const { return api->wasmtime_memory_data_size(ctx, &memory); }

namespace hostfn {

namespace {

bool grow_to(HostState* st, uint64_t new_size) {
  size_t old = st->mem_size();
  if (new_size <= old) return true;
  uint64_t pages = (new_size - old + 65535) >> 16;
  if (st->memory_limit >= 0 && old + pages * 65536 > static_cast<uint64_t>(st->memory_limit)) {
    st->limit_hit = true;
    return false;
  }
  uint64_t prev = 0;
  wasmtime_error_t* e = api->wasmtime_memory_grow(st->ctx, &st->memory, pages, &prev);
  if (e) {
    wt::take_error(e);
    return false;
  }
  return true;
}

// ---- environment (docs/ABI.md, host imports): formats 1-3 get the 7 web_user strings, 4/wasm64 an empty
// environment
const std::vector<std::string>& env_strings(const HostState* st) {
  static const std::vector<std::string> seven = {"USER=web_user", "LOGNAME=web_user", "PATH=/", "PWD=/",
                                                 "HOME=/home/web_user", "LANG=C.UTF-8", "_=./this.program"};
  static const std::vector<std::string> none;
  return (st->family == F1 || st->family == F2 || st->family == F3) ? seven : none;
}

}  // namespace

// ---------------------------------------------------------------- host functions

void h_abort(HostState*, const Args&) { throw HostTrap{"abort() called"}; }

void h_assert_fail(HostState* st, const Args& a) {
  Mem m(st);
  std::string msg = "Assertion failed: " + m.cstr(a.u(0), 4096) + ", at: " + m.cstr(a.u(1), 4096) + "," +
                    std::to_string(a.i(2)) + "," + m.cstr(a.u(3), 4096);
  throw HostTrap{msg};
}

void h_exit(HostState*, const Args& a) { throw HostTrap{"exit(" + std::to_string(a.i(0)) + ") called"}; }

void h_cxa_throw(HostState*, const Args&) {
  throw HostTrap{"__cxa_throw: C++ exceptions are disabled in this build (abort)"};
}

void h_dl(HostState*, const Args&) { throw HostTrap{"dynamic linking (dlopen) is not supported (abort)"}; }

void h_system(HostState* st, const Args& a) {
  // docs/ABI.md (host imports): never execute anything. NULL probes "is there a shell" -> 0 (no).
  if (a.u(0) == 0) return a.ret(0);
  if (st->family == F1 || st->family == F2) {
    // errno = ENOSYS via the module's __errno_location, then -1
    if (st->f_errno.store_id) {
      wasmtime_val_raw_t r[1];
      r[0].i64 = 0;
      wasm_trap_t* trap = nullptr;
      wasmtime_error_t* err = api->wasmtime_func_call_unchecked(st->ctx, &st->f_errno, r, 1, &trap);
      if (err) wt::take_error(err);
      if (trap) return void(a.ret(-1)), void(wt::take_trap(trap, nullptr, nullptr));
      uint64_t p = st->mem64 ? static_cast<uint64_t>(r[0].i64) : static_cast<uint32_t>(r[0].i32);
      Mem m(st);
      m.w32(p, E_NOSYS);
    }
    return a.ret(-1);
  }
  a.ret(-E_NOSYS);
}

void h_get_temp_ret0(HostState* st, const Args& a) { a.ret(st->temp_ret0); }
void h_set_temp_ret0(HostState* st, const Args& a) { st->temp_ret0 = a.i(0); }

void h_throw_longjmp(HostState* st, const Args&) {
  st->longjmp_pending = true;
  throw HostTrap{"longjmp"};
}

void h_memcpy(HostState* st, const Args& a) {
  Mem m(st);
  uint64_t dst = a.u(0), src = a.u(1), n = a.u(2);
  m.check(dst, n);
  m.check(src, n);
  std::memmove(m.base + dst, m.base + src, n);
}

void h_resize_heap(HostState* st, const Args& a) {
  // docs/ABI.md (host imports), in the glue's double arithmetic.
  const double old = static_cast<double>(st->mem_size());
  const double req = static_cast<double>(a.u(0));
  const double heap_max = static_cast<double>(st->heap_max);
  if (req > heap_max) return a.ret(0);
  for (int cut = 1; cut <= 4; cut *= 2) {
    double over = old * (1 + 0.2 / cut);
    over = std::min(over, req + 100663296.0);
    double ns = std::max(req, over);
    ns = std::ceil(ns / 65536.0) * 65536.0;
    ns = std::min(heap_max, ns);
    if (grow_to(st, static_cast<uint64_t>(ns))) return a.ret(1);
  }
  a.ret(0);
}

void h_get_heap_max(HostState* st, const Args& a) { a.ret(static_cast<int64_t>(st->heap_max)); }

void h_mmap(HostState*, const Args& a) { a.ret(-E_NOSYS); }  // file mappings not implemented
void h_munmap(HostState*, const Args& a) { a.ret(0); }

void h_environ_sizes_get(HostState* st, const Args& a) {
  Mem m(st);
  const auto& env = env_strings(st);
  uint64_t total = 0;
  for (auto& s : env) total += s.size() + 1;
  m.wptr(a.u(0), env.size(), st->mem64);
  m.wptr(a.u(1), total, st->mem64);
  a.ret(0);
}

void h_environ_get(HostState* st, const Args& a) {
  Mem m(st);
  const auto& env = env_strings(st);
  uint64_t arr = a.u(0), buf = a.u(1);
  size_t w = st->mem64 ? 8 : 4;
  for (size_t k = 0; k < env.size(); ++k) {
    m.wptr(arr + k * w, buf, st->mem64);
    std::memcpy(m.at(buf, env[k].size() + 1), env[k].c_str(), env[k].size() + 1);
    buf += env[k].size() + 1;
  }
  a.ret(0);
}

void h_proc_exit(HostState*, const Args& a) { throw HostTrap{"proc_exit(" + std::to_string(a.i(0)) + ") called"}; }

void h_emscripten_err(HostState*, const Args&) {}  // stderr: discarded

// WeaveDrive (docs/ABI.md, host imports): no WeaveDrive configured in this engine -> NULL FILE / nothing read.
void h_wd_zero(HostState*, const Args& a) { a.ret(0); }

void h_usegas(HostState* st, const Args& a) {
  int64_t n = a.s(0);
  st->gas_used += static_cast<uint64_t>(n < 0 ? 0 : n);
  if (st->gas_used > st->gas_limit) throw HostTrap{"out of gas!"};
}

void h_gas_used(HostState* st, const Args& a) { a.ret(static_cast<int32_t>(static_cast<uint32_t>(st->gas_used))); }

}  // namespace hostfn

}  // namespace aocu::engine
