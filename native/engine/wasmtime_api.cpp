// dlopen()/dlsym() of the wasmtime C API subset declared in wasmtime_api.h.
#include "wasmtime_api.h"

#include <dlfcn.h>

#include <mutex>

namespace aocu::wt {

const Api* api = nullptr;

namespace {
Api g_table;
std::mutex g_mu;
}  // namespace

bool load_api(const std::string& path, std::string& err) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (api) return true;
  // RTLD_LOCAL: keep wasmtime's symbols private to us (wasmtime-py may load the same file via ctypes;
  // dlopen returns the same handle then, which is fine).
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    err = std::string("cannot dlopen wasmtime library ") + path + ": " + (e ? e : "unknown error");
    return false;
  }
  std::string missing;
#define AOCU_WT_RESOLVE(name, ret, args)                                 \
  g_table.name = reinterpret_cast<ret(*) args>(dlsym(h, #name));        \
  if (!g_table.name) missing += (missing.empty() ? "" : ", ") + std::string(#name);
  AOCU_WASMTIME_FUNCS(AOCU_WT_RESOLVE)
#undef AOCU_WT_RESOLVE
  if (!missing.empty()) {
    err = "wasmtime library " + path + " lacks required C API symbols: " + missing;
    return false;  // handle intentionally kept: harmless, and another loader may share it
  }
  api = &g_table;
  return true;
}

std::string take_error(wasmtime_error_t* e) {
  if (!e) return {};
  wasm_byte_vec_t msg{0, nullptr};
  api->wasmtime_error_message(e, &msg);
  std::string out(msg.data ? msg.data : "", msg.size);
  api->wasm_byte_vec_delete(&msg);
  api->wasmtime_error_delete(e);
  return out;
}

std::string take_trap(wasm_trap_t* t, wasmtime_trap_code_t* code_out, bool* has_code) {
  if (!t) return {};
  wasm_byte_vec_t msg{0, nullptr};
  api->wasm_trap_message(t, &msg);
  std::string out(msg.data ? msg.data : "", msg.size);
  // wasm_trap_message includes the trailing NUL in size.
  while (!out.empty() && out.back() == '\0') out.pop_back();
  api->wasm_byte_vec_delete(&msg);
  wasmtime_trap_code_t code = 0;
  bool hc = api->wasmtime_trap_code(t, &code);
  if (has_code) *has_code = hc;
  if (code_out) *code_out = code;
  api->wasm_trap_delete(t);
  return out;
}

}  // namespace aocu::wt
