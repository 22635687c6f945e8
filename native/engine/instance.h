// One running process instance: store, linker, host state, the handle() call, rollback and snapshots.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/host.h"
#include "engine/memory_creator.h"

namespace aocu::engine {

struct Limits {
  int64_t memory_limit = -1;   // bytes; -1 = module maximum / glue heap max only
  int64_t compute_limit = -1;  // metered modules: gas (usegas units); others: wasmtime fuel. -1 = default
  double timeout_s = 0;        // wall-clock backstop per call; <= 0 = default
};

struct GlobalVal {
  std::string name;
  uint8_t kind;  // WASMTIME_I32/I64/F32/F64
  int64_t bits;
};

// Everything needed to recreate the state of an instance (between calls).
struct StateImage {
  uint64_t mem_size = 0;
  std::string memory;  // encoded (snapshot.h) when `encoded`, else raw bytes
  bool encoded = false;
  // When set, the memory is this raw page image (and `memory` is unused): restored copy-on-write.
  std::shared_ptr<PageImage> image;
  std::vector<GlobalVal> globals;
  std::string host;
};

struct CallResult {
  bool ok = false;            // true: response holds the module's `response` JSON and it is not an error
  std::string response;       // JSON text of `response` (ok:true), may hold {"Error":...} when is_error
  bool has_response = false;
  std::string error;          // message-level error (trap, out of gas, ok:false, bad JSON)
  bool is_error = false;      // memory was rolled back
  uint64_t gas = 0;
  uint64_t fuel = 0;
};

class Instance {
 public:
  Instance(std::shared_ptr<CompiledModule> m, Family fam, Limits lim, const StateImage* restore);
  ~Instance();
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  CallResult handle(const std::string& msg, const std::string& env);
  size_t memory_size() const;
  const uint8_t* memory_data() const;
  StateImage capture(bool encode) const;
  bool metered() const { return metered_; }
  std::string rollback_stats() const;
  // Wall time of the last call into the module's handle export (host functions it called included).
  uint64_t last_handle_ns() const { return last_handle_ns_; }

 private:
  void build();
  void teardown();
  void lifecycle_init();
  void load_state(const StateImage& s, bool fresh_store);
  CallResult raw_call(const std::string& msg, const std::string& env);
  void take_base();
  void recover();
  bool call(const wasmtime_func_t& f, wasmtime_val_raw_t* vals, size_t n, std::string& err);
  bool get_func(const char* name, wasmtime_func_t& out);
  void arm_limits(uint64_t fuel);
  uint64_t stack_alloc(uint64_t size, std::string& err);

  std::shared_ptr<CompiledModule> module_;
  Family fam_;
  Limits lim_;
  bool metered_ = false;
  wasmtime_store_t* store_ = nullptr;
  wasmtime_context_t* ctx_ = nullptr;
  wasmtime_linker_t* linker_ = nullptr;
  wasmtime_instance_t inst_{};
  std::unique_ptr<HostState> st_;
  std::vector<std::unique_ptr<Bound>> bounds_;
  wasmtime_func_t f_handle_{}, f_stack_save_{}, f_stack_restore_{}, f_stack_alloc_{}, f_malloc_{};
  size_t initial_mem_ = 0;
  uint64_t last_handle_ns_ = 0;

  // Rollback journal: the state at `base_` plus the messages applied since (replayed after an error).
  struct Entry {
    std::string msg, env;
    uint64_t digest;
  };
  StateImage base_;
  bool have_base_ = false;
  std::vector<Entry> journal_;
  size_t journal_bytes_ = 0;
  double exec_since_base_s_ = 0, last_base_cost_s_ = 0;
  uint64_t n_base_ = 0, n_recover_ = 0, n_replayed_ = 0;
  std::string broken_;
  std::mutex busy_;
};

}  // namespace aocu::engine
