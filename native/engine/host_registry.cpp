// Import table and resolution: which host function (and signature variant) serves each (module, name,
// signature) import per format, format-1 minified names, and the noexcept trampolines that turn every C++
// exception into a wasm trap. See docs/ABI.md (module formats, host imports). Split out of host.cpp so the
// table that binds the implementations (host.cpp, host_time.cpp, host_fs.cpp, host_invoke.cpp) stands alone.
#include <cstring>
#include <exception>
#include <map>
#include <string>
#include <vector>

#include "engine/host.h"
#include "engine/host_internal.h"

namespace aocu::engine {

using namespace hostfn;

namespace {

// ---------------------------------------------------------------- registry

struct Entry {
  const char* name;
  Impl impl;
  std::vector<const char*> sigs;
};

const std::vector<Entry>& registry() {
  static const std::vector<Entry> r = {
      {"fd_write", h_fd_write, {"iiii:i", "ijjj:i"}},
      {"fd_read", h_fd_read, {"iiii:i", "ijjj:i"}},
      {"fd_close", h_fd_close, {"i:i"}},
      {"fd_seek", h_fd_seek, {"iiiii:i", "ijij:i", "ijii:i"}},
      {"fd_sync", h_fd_sync, {"i:i"}},
      {"fd_fdstat_get", h_fd_fdstat_get, {"ii:i", "ij:i"}},
      {"environ_get", h_environ_get, {"ii:i", "jj:i"}},
      {"environ_sizes_get", h_environ_sizes_get, {"ii:i", "jj:i"}},
      {"proc_exit", h_proc_exit, {"i:"}},
      {"clock_time_get", h_clock_time_get, {"iji:i", "ijj:i"}},
      {"abort", h_abort, {":"}},
      {"_abort_js", h_abort, {":"}},
      {"__assert_fail", h_assert_fail, {"iiii:", "jjij:"}},
      {"exit", h_exit, {"i:"}},
      {"system", h_system, {"i:i"}},
      {"_emscripten_system", h_system, {"i:i", "j:i"}},
      {"getTempRet0", h_get_temp_ret0, {":i"}},
      {"setTempRet0", h_set_temp_ret0, {"i:"}},
      {"_emscripten_throw_longjmp", h_throw_longjmp, {":"}},
      {"__cxa_throw", h_cxa_throw, {"iii:", "jjj:"}},
      {"emscripten_memcpy_big", h_memcpy, {"iii:", "jjj:"}},
      {"emscripten_memcpy_js", h_memcpy, {"iii:", "jjj:"}},
      {"_emscripten_memcpy_js", h_memcpy, {"iii:", "jjj:"}},
      {"emscripten_resize_heap", h_resize_heap, {"i:i", "j:i"}},
      {"emscripten_get_heap_max", h_get_heap_max, {":i", ":j"}},
      {"_emscripten_date_now", h_date_zero, {":d"}},
      {"emscripten_date_now", h_date_counter, {":d"}},
      {"emscripten_get_now", h_date_counter, {":d"}},
      {"_emscripten_get_now_is_monotonic", h_monotonic, {":i"}},
      {"_tzset_js", h_tzset, {"iii:", "iiii:", "jjjj:"}},
      {"_localtime_js", h_gmtime, {"ii:", "iii:", "jj:", "ji:"}},
      {"_gmtime_js", h_gmtime, {"ii:", "iii:", "jj:", "ji:"}},
      {"_mktime_js", h_mktime, {"i:i", "j:j", "i:j"}},
      {"strftime", h_strftime, {"iiii:i", "jjjj:j"}},
      {"strftime_l", h_strftime, {"iiiii:i", "jjjjj:j"}},
      {"_mmap_js", h_mmap, {"iiiiii:i", "iiiiiiii:i", "iiiiiii:i", "jiiijjj:i"}},
      {"_munmap_js", h_munmap, {"iiiiii:i", "iiiiiii:i", "jjiiij:i"}},
      {"_dlopen_js", h_dl, {"i:i", "j:j"}},
      {"_dlsym_js", h_dl, {"ii:i", "jj:j"}},
      {"_dlinit", h_dl, {"i:", "j:"}},
      {"__syscall_openat", h_openat, {"iiii:i", "ijij:i"}},
      {"__syscall_fcntl64", h_fcntl, {"iii:i", "iij:i"}},
      {"__syscall_ioctl", h_ioctl, {"iii:i", "iij:i"}},
      {"__syscall_dup3", h_dup3, {"iii:i"}},
      {"__syscall_unlinkat", h_unlinkat, {"iii:i", "iji:i"}},
      {"__syscall_rmdir", h_rmdir, {"i:i", "j:i"}},
      {"__syscall_renameat", h_renameat, {"iiii:i", "ijij:i"}},
      {"__syscall_readlinkat", h_readlinkat, {"iiii:i", "ijjj:i"}},
      {"__syscall_lstat64", h_stat64, {"ii:i", "jj:i"}},
      {"__syscall_stat64", h_stat64, {"ii:i", "jj:i"}},
      {"__syscall_fstat64", h_fstat64, {"ii:i", "ij:i"}},
      {"__syscall_newfstatat", h_newfstatat, {"iiii:i", "ijji:i"}},
      {"__syscall_faccessat", h_faccessat, {"iiii:i", "ijii:i"}},
      {"__syscall_chmod", h_ok_path0, {"ii:i", "ji:i"}},
      {"__syscall_fchmod", h_zero, {"ii:i"}},
      {"__syscall_fchown32", h_zero, {"iii:i"}},
      {"__syscall_getcwd", h_getcwd, {"ii:i", "jj:i"}},
      {"__syscall_mkdirat", h_mkdirat, {"iii:i", "iji:i"}},
      {"__syscall_utimensat", h_ok_path1, {"iiii:i", "ijji:i"}},
      {"__syscall_ftruncate64", h_ftruncate, {"iii:i", "ij:i"}},
      {"__asyncjs__weavedrive_open", h_wd_zero, {"ii:i", "jj:i"}},
      {"__asyncjs__weavedrive_read", h_wd_zero, {"iii:i", "ijj:i"}},
      {"__asyncjs__weavedrive_close", h_wd_zero, {"i:i"}},
      {"metering_gasUsed", h_gas_used, {":i"}},
      {"emscripten_err", h_emscripten_err, {"i:", "j:"}},
  };
  return r;
}

// Format 1 minified import letters (docs/ABI.md, module formats).
const char* f1_name(const std::string& letter) {
  static const std::map<std::string, const char*> m = {
      {"a", "_emscripten_date_now"}, {"b", "setTempRet0"}, {"c", "fd_close"}, {"d", "__syscall_fcntl64"},
      {"e", "__syscall_unlinkat"}, {"f", "fd_write"}, {"g", "__syscall_openat"}, {"h", "getTempRet0"},
      {"i", "_mktime_js"}, {"j", "_tzset_js"}, {"k", "emscripten_memcpy_big"}, {"l", "exit"}, {"m", "system"},
      {"n", "strftime"}, {"o", "fd_seek"}, {"p", "_emscripten_throw_longjmp"}, {"q", "emscripten_resize_heap"},
      {"r", "__syscall_lstat64"}, {"s", "__syscall_renameat"}, {"t", "__syscall_rmdir"}, {"u", "environ_get"},
      {"v", "environ_sizes_get"}, {"w", "__syscall_dup3"}, {"x", "invoke_vii"}, {"y", "fd_read"},
      {"z", "__syscall_ioctl"}, {"A", "_emscripten_get_now_is_monotonic"}, {"B", "_gmtime_js"},
      {"C", "_localtime_js"}, {"D", "abort"}};
  auto it = m.find(letter);
  return it == m.end() ? nullptr : it->second;
}

template <Impl F>
wasm_trap_t* trampoline(void* env, wasmtime_caller_t*, wasmtime_val_raw_t* a, size_t) noexcept {
  Bound* b = static_cast<Bound*>(env);
  try {
    F(b->st, Args{a, b});
    return nullptr;
  } catch (const HostTrap& t) {
    // remember the reason so a trap that unwinds through invoke_* keeps its message
    if (t.msg != "longjmp") b->st->trap_reason = t.msg;
    return make_trap(t.msg);
  } catch (const std::exception& e) {
    b->st->trap_reason = std::string("host error in ") + b->name + ": " + e.what();
    return make_trap(b->st->trap_reason);
  } catch (...) {
    b->st->trap_reason = std::string("host error in ") + b->name;
    return make_trap(b->st->trap_reason);
  }
}

// One trampoline per implementation, generated at compile time.
struct ImplCb {
  Impl impl;
  wasmtime_func_unchecked_callback_t cb;
};
#define AOCU_CB(f) ImplCb{f, trampoline<f>}
const ImplCb kCallbacks[] = {
    AOCU_CB(h_fd_write), AOCU_CB(h_fd_read), AOCU_CB(h_fd_close), AOCU_CB(h_fd_seek), AOCU_CB(h_fd_sync),
    AOCU_CB(h_fd_fdstat_get), AOCU_CB(h_environ_get), AOCU_CB(h_environ_sizes_get), AOCU_CB(h_proc_exit),
    AOCU_CB(h_clock_time_get), AOCU_CB(h_abort), AOCU_CB(h_assert_fail), AOCU_CB(h_exit), AOCU_CB(h_system),
    AOCU_CB(h_get_temp_ret0), AOCU_CB(h_set_temp_ret0), AOCU_CB(h_throw_longjmp), AOCU_CB(h_cxa_throw),
    AOCU_CB(h_memcpy), AOCU_CB(h_resize_heap), AOCU_CB(h_get_heap_max), AOCU_CB(h_date_zero),
    AOCU_CB(h_date_counter), AOCU_CB(h_monotonic), AOCU_CB(h_tzset), AOCU_CB(h_gmtime), AOCU_CB(h_mktime),
    AOCU_CB(h_strftime), AOCU_CB(h_mmap), AOCU_CB(h_munmap), AOCU_CB(h_dl), AOCU_CB(h_openat),
    AOCU_CB(h_fcntl), AOCU_CB(h_ioctl), AOCU_CB(h_dup3), AOCU_CB(h_unlinkat), AOCU_CB(h_rmdir),
    AOCU_CB(h_renameat), AOCU_CB(h_readlinkat), AOCU_CB(h_stat64), AOCU_CB(h_fstat64), AOCU_CB(h_newfstatat),
    AOCU_CB(h_faccessat), AOCU_CB(h_ok_path0), AOCU_CB(h_zero), AOCU_CB(h_getcwd), AOCU_CB(h_mkdirat),
    AOCU_CB(h_ok_path1), AOCU_CB(h_ftruncate), AOCU_CB(h_wd_zero), AOCU_CB(h_gas_used),
    AOCU_CB(h_emscripten_err), AOCU_CB(h_usegas), AOCU_CB(h_invoke)};
#undef AOCU_CB

wasmtime_func_unchecked_callback_t cb_for(Impl f) {
  for (auto& c : kCallbacks)
    if (c.impl == f) return c.cb;
  return nullptr;
}

}  // namespace

// ---------------------------------------------------------------- resolution

static bool parse_invoke(const std::string& name, const std::string& declared, bool& ok) {
  // invoke_<ret><params...>: declared = idx-type + params ':' ret (v = none)
  ok = false;
  if (name.rfind("invoke_", 0) != 0) return false;
  std::string s = name.substr(7);
  if (s.empty()) return true;
  for (char c : s)
    if (!std::strchr("vijfd", c)) return true;
  std::string params = s.substr(1);
  if (params.find('v') != std::string::npos) return true;
  std::string res = s[0] == 'v' ? "" : std::string(1, s[0]);
  ok = declared == "i" + params + ":" + res || declared == "j" + params + ":" + res;
  return true;
}

wasmtime_func_unchecked_callback_t resolve_import(Family fam, const std::string& module, const std::string& name,
                                                  const std::string& sig, std::string& real_name, int& variant,
                                                  std::string& why) {
  variant = 0;
  real_name = name;
  if (module == "metering" && name == "usegas") {
    if (sig == "i:" || sig == "j:") return cb_for(h_usegas);
    why = "metering.usegas must be (i32)->() or (i64)->()";
    return nullptr;
  }
  if (fam == F1) {
    if (module != "a") {
      why = "format wasm32-unknown-emscripten imports only namespace 'a' and metering.usegas";
      return nullptr;
    }
    const char* n = f1_name(name);
    if (!n) {
      why = "unknown minified import";
      return nullptr;
    }
    real_name = n;
  } else if (module != "env" && module != "wasi_snapshot_preview1") {
    why = "unknown import namespace";
    return nullptr;
  }
  bool inv_ok = false;
  if (parse_invoke(real_name, sig, inv_ok)) {
    if (!inv_ok) {
      why = "invoke_* signature does not match its name";
      return nullptr;
    }
    return cb_for(h_invoke);
  }
  for (const Entry& e : registry()) {
    if (real_name != e.name) continue;
    for (size_t k = 0; k < e.sigs.size(); ++k) {
      if (sig == e.sigs[k]) {
        variant = static_cast<int>(k);
        return cb_for(e.impl);
      }
    }
    why = "unsupported signature " + sig + " (supported:";
    for (auto s : e.sigs) why += std::string(" ") + s;
    why += ")";
    return nullptr;
  }
  why = "not provided by the AO host ABI";
  return nullptr;
}

}  // namespace aocu::engine
