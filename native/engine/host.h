// Host-side state of one instance and the host functions (WASI preview1 in 32/64-bit pointer variants,
// emscripten env imports, invoke_* trampolines, metering, WeaveDrive). No Python types here.
// Implemented across host.cpp, host_time.cpp, host_fs.cpp, host_invoke.cpp, host_registry.cpp and
// host_state.cpp; their shared internals are in host_internal.h.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "wasmtime_api.h"

namespace aocu::engine {

// Format families (docs/ABI.md, module formats): the glue a Module-Format string selects.
enum Family : int { F1 = 1, F2 = 2, F3 = 3, F4 = 4, W64 = 5 };

// Minimal deterministic in-memory filesystem (docs/ABI.md, host imports). Not in linear memory; saved in
// snapshots. Implemented in host_fs.cpp.
struct MemFs {
  struct Node {
    bool dir = false;
    std::string data;
  };
  struct Fd {
    std::string path;
    uint64_t pos = 0;
    int32_t flags = 0;
  };
  std::map<std::string, Node> nodes;  // absolute normalised paths
  std::map<int32_t, Fd> fds;          // 0/1/2 are the tty streams
  uint64_t bytes = 0;                  // total file bytes (host memory), capped at kMaxBytes
  static constexpr uint64_t kMaxBytes = uint64_t(64) << 20;
  // Resizes a file's data within the cap; false (nothing changed) if the cap would be exceeded.
  bool resize(Node& n, uint64_t size);

  void init(bool with_data_dir);
  static std::string normalise(const std::string& cwd_rel);
  bool exists(const std::string& p) const { return nodes.count(p) != 0; }
  bool is_dir(const std::string& p) const;
  bool parent_is_dir(const std::string& p) const;
  int32_t alloc_fd(int32_t min_fd = 3) const;
};

class Instance;

// Per-call and persistent host state. Persistent parts (serialised into snapshots) are marked.
struct HostState {
  Family family = F4;
  bool mem64 = false;
  Instance* inst = nullptr;
  wasmtime_context_t* ctx = nullptr;
  wasmtime_memory_t memory{};
  bool has_table = false;
  wasmtime_table_t table{};
  // exports used by host functions (store_id 0 = absent)
  wasmtime_func_t f_set_threw{}, f_stack_save{}, f_stack_restore{}, f_malloc{}, f_errno{};

  // persistent
  int32_t temp_ret0 = 0;
  double clock = 10000.0;  // counter clock, see docs/ABI.md (host imports)
  std::string urandom_key;  // 32 bytes, set per message
  uint64_t urandom_ctr = 0;
  MemFs fs;
  const std::string* cur_msg = nullptr;  // message being handled (urandom key derived lazily from it)

  // per call
  uint64_t gas_used = 0;
  uint64_t gas_limit = 9000000000000000ULL;
  bool longjmp_pending = false;
  std::string trap_reason;  // set by host functions that trap deliberately
  bool limit_hit = false;

  // limits
  int64_t memory_limit = -1;
  uint64_t heap_max = 0;

  uint8_t* mem_base() const;
  size_t mem_size() const;
  std::string serialize() const;
  void deserialize(const std::string& s);  // throws std::runtime_error
};

// A host function bound for one import: the callback reads arguments per the declared signature.
struct Bound {
  HostState* st;
  std::string sig;   // declared params (i/j/f/d) ':' results
  int variant;       // index of the matching signature in the registry entry
  std::string name;  // real (unminified) name
};

// Import resolution: returns the callback for (module, name, declared signature) or nullptr with `why`.
wasmtime_func_unchecked_callback_t resolve_import(Family fam, const std::string& module, const std::string& name,
                                                  const std::string& sig, std::string& real_name, int& variant,
                                                  std::string& why);

// Signature string of a function type: params ':' results, kinds i j f d (x = other).
std::string sig_of(const wasm_functype_t* ft);

wasm_trap_t* make_trap(const std::string& msg);
// Root cause of a wasmtime error/trap message (drops the backtrace).
std::string clean_message(const std::string& msg);

}  // namespace aocu::engine
