// Process-wide wasmtime engine (deterministic config + epoch ticker) and compiled modules.
#pragma once
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/host.h"
#include "wasmtime_api.h"

namespace aocu::engine {

// Load/link/validate problems with a module (maps to cu.engine.ModuleError).
struct ModuleLoadError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Unreadable/incompatible snapshot data (maps to cu.engine.SnapshotError).
struct SnapshotDataError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr unsigned kEpochTickMs = 5;

// Held around every entry into wasm from the host (instantiation, Instance::call; nested calls from host
// functions are inside one): the epoch ticker runs only while one is alive.
class EpochActive {
 public:
  EpochActive();
  ~EpochActive();
  EpochActive(const EpochActive&) = delete;
  EpochActive& operator=(const EpochActive&) = delete;
};

// Two configurations, identical except for wasmtime fuel: `fuel` engines count instructions (Compute-Limit
// of non-metered modules); fuel-free ones run without that per-block cost, for instances where fuel can make
// no observable difference (docs/ABI.md, Limits and gas). Code compiled by one never runs in the other.
class Engine {
 public:
  static Engine& get(bool fuel = true);  // creates the engine and its ticker thread on first use
  wasm_engine_t* raw() const { return engine_; }
  bool fuel() const { return fuel_; }
  // Everything that changes compiled code: part of the compiled-module cache key.
  static std::string fingerprint(bool fuel = true);

 private:
  explicit Engine(bool fuel);
  wasm_engine_t* engine_ = nullptr;
  bool fuel_ = true;
};

struct ImportDesc {
  std::string module, name, kind, sig;  // kind: func/global/table/memory/other; sig for funcs
};

class CompiledModule {
 public:
  ~CompiledModule();
  CompiledModule(const CompiledModule&) = delete;
  CompiledModule& operator=(const CompiledModule&) = delete;

  // `fuel`: which engine configuration (Engine::get(fuel)) compiles and later runs the code.
  static std::shared_ptr<CompiledModule> compile(const uint8_t* wasm, size_t len, bool fuel = true);  // ModuleLoadError
  static std::shared_ptr<CompiledModule> deserialize(const uint8_t* data, size_t len, bool fuel = true);
  // Validated (wasmtime's validator, no compile) and described from the bytes: imports, exports, check() and
  // imports_usegas() work, but it holds no code (compiled() is false) and cannot be instantiated.
  static std::shared_ptr<CompiledModule> describe(const uint8_t* wasm, size_t len);  // ModuleLoadError
  bool compiled() const { return m_ != nullptr; }
  std::string serialize() const;
  bool fuel() const { return fuel_; }
  Engine& engine() const { return Engine::get(fuel_); }

  const std::vector<ImportDesc>& imports() const { return imports_; }
  // exports: name -> kind ('func' sig or "memory"/"table"/"global")
  const std::vector<std::pair<std::string, std::string>>& exports() const { return exports_; }
  std::string export_sig(const std::string& name) const;  // "" if absent
  bool has_export(const std::string& name) const;
  // Problems that make the module unusable for `fam` (unknown imports, missing exports); empty if fine.
  std::vector<std::string> check(Family fam) const;
  bool imports_usegas() const;
  wasmtime_module_t* raw() const { return m_; }

 private:
  CompiledModule() = default;
  void describe();
  wasmtime_module_t* m_ = nullptr;
  bool fuel_ = true;
  std::vector<ImportDesc> imports_;
  std::vector<std::pair<std::string, std::string>> exports_;
};

// Export names per family (format 1 is minified; see docs/ABI.md, module formats).
struct ExportNames {
  const char *memory, *ctors, *handle, *main, *table, *malloc, *errno_loc, *set_threw;
};
ExportNames export_names(Family fam);

}  // namespace aocu::engine
