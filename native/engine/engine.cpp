// Deterministic engine configuration, epoch ticker, module compile/serialize and import checking.
#include "engine/engine.h"
#include "engine/memory_creator.h"
#include "transform/wasm_binary.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace aocu::engine {

using wt::api;

namespace {
// One epoch ticker for the process (both engine configurations). It ticks only while some wasm runs (EpochActive
// counts the calls) and parks otherwise: an idle node, or one between messages, is not woken 200 times a second
// per engine. Deadlines are relative to the epoch when a call is armed, and the ticker wakes within a tick of a
// call starting, so a call's wall-clock limit is what it was with a free-running ticker.
struct Ticker {
  std::mutex m;
  std::condition_variable cv;
  std::atomic<int> active{0};
  std::vector<wasm_engine_t*> engines;  // guarded by m; engines are never deleted (process lifetime)

  static Ticker& get() {
    static Ticker* t = [] {
      auto* made = new Ticker();  // never deleted: the detached thread uses it until the process exits
      std::thread([made] { made->run(); }).detach();
      return made;
    }();
    return *t;
  }

  void run() {
    std::vector<wasm_engine_t*> todo;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(m);
        cv.wait(lk, [this] { return active.load(std::memory_order_acquire) > 0; });
        todo = engines;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(kEpochTickMs));
      for (wasm_engine_t* e : todo) api->wasmtime_engine_increment_epoch(e);
    }
  }
};

struct ConfigFlags {
  static constexpr bool epoch = true, nan_canon = true, threads = false, relaxed_det = true,
                        memory64 = true, exceptions = true, reference_types = true;
  static constexpr size_t max_wasm_stack = 4u << 20;
};
}  // namespace

std::string Engine::fingerprint(bool fuel) {
  // wasmtime version is checked by the Python side (the wheel pin) and added to the cache key there too.
  return std::string("aocu-engine-v1;wasmtime=50.0.1;") + (fuel ? "fuel" : "no-fuel") +
         ";epoch;nan-canon;no-threads;relaxed-simd-det;memory64;exceptions;reftypes;opt=speed;native=" AOCU_NATIVE_VERSION;
}

Engine::Engine(bool fuel) : fuel_(fuel) {
  wasm_config_t* c = api->wasm_config_new();
  api->wasmtime_config_consume_fuel_set(c, fuel);
  api->wasmtime_config_epoch_interruption_set(c, ConfigFlags::epoch);
  api->wasmtime_config_cranelift_nan_canonicalization_set(c, ConfigFlags::nan_canon);
  api->wasmtime_config_cranelift_opt_level_set(c, wt::OPT_SPEED);
  api->wasmtime_config_wasm_threads_set(c, ConfigFlags::threads);
  api->wasmtime_config_wasm_relaxed_simd_deterministic_set(c, ConfigFlags::relaxed_det);
  api->wasmtime_config_wasm_memory64_set(c, ConfigFlags::memory64);
  api->wasmtime_config_wasm_reference_types_set(c, ConfigFlags::reference_types);
  api->wasmtime_config_wasm_exceptions_set(c, ConfigFlags::exceptions);
  // Linear memories are our own mmap reservations, so snapshots can be mapped copy-on-write into them.
  install_memory_creator(c);
  engine_ = api->wasm_engine_new_with_config(c);  // takes ownership of c
  if (!engine_) throw std::runtime_error("wasmtime rejected the engine configuration");
  // Wall-clock backstop: the ticker bumps the epoch while wasm runs; stores trap when past their deadline.
  // The engine is intentionally never deleted (process lifetime), so the ticker never sees a dangling pointer.
  Ticker& t = Ticker::get();
  std::lock_guard<std::mutex> lk(t.m);
  t.engines.push_back(engine_);
}

EpochActive::EpochActive() {
  Ticker& t = Ticker::get();
  if (t.active.fetch_add(1, std::memory_order_acq_rel) == 0) {
    std::lock_guard<std::mutex> lk(t.m);  // the ticker tests `active` under the lock: no lost wake-up
    t.cv.notify_one();
  }
}

EpochActive::~EpochActive() { Ticker::get().active.fetch_sub(1, std::memory_order_acq_rel); }

Engine& Engine::get(bool fuel) {
  static std::once_flag once[2];
  static Engine* inst[2] = {nullptr, nullptr};
  if (!api) throw std::runtime_error("wasmtime C API not loaded (cu._native.engine.init was not called)");
  std::call_once(once[fuel], [fuel] { inst[fuel] = new Engine(fuel); });
  return *inst[fuel];
}

CompiledModule::~CompiledModule() {
  if (m_) api->wasmtime_module_delete(m_);
}

std::shared_ptr<CompiledModule> CompiledModule::compile(const uint8_t* wasm, size_t len, bool fuel) {
  Engine& e = Engine::get(fuel);
  std::shared_ptr<CompiledModule> cm(new CompiledModule());
  cm->fuel_ = fuel;
  wasmtime_error_t* err = api->wasmtime_module_new(e.raw(), wasm, len, &cm->m_);
  if (err) throw ModuleLoadError("invalid wasm module: " + wt::take_error(err));
  cm->describe();
  return cm;
}

std::shared_ptr<CompiledModule> CompiledModule::deserialize(const uint8_t* data, size_t len, bool fuel) {
  Engine& e = Engine::get(fuel);
  std::shared_ptr<CompiledModule> cm(new CompiledModule());
  cm->fuel_ = fuel;
  // Only ever called on artifacts this engine wrote to its own cache (integrity-checked by the caller).
  wasmtime_error_t* err = api->wasmtime_module_deserialize(e.raw(), data, len, &cm->m_);
  if (err) throw ModuleLoadError("cannot deserialize compiled module: " + wt::take_error(err));
  cm->describe();
  return cm;
}

namespace {
// The same signature string sig_of() gives for a compiled module's function type.
std::string sig_string(const wasm::FuncType& t) {
  auto enc = [](const std::vector<wasm::ValType>& v) {
    std::string s;
    for (const wasm::ValType& x : v) s += x.size() != 1 ? 'x' : x[0] == 0x7F ? 'i' : x[0] == 0x7E ? 'j' : x[0] == 0x7D ? 'f' : x[0] == 0x7C ? 'd' : 'x';
    return s;
  };
  return enc(t.params) + ":" + enc(t.results);
}
}  // namespace

std::shared_ptr<CompiledModule> CompiledModule::describe(const uint8_t* wasm, size_t len) {
  // Validation is the same in both engines (they differ only in fuel, which does not change what is valid).
  wasmtime_error_t* err = api->wasmtime_module_validate(Engine::get(true).raw(), wasm, len);
  if (err) throw ModuleLoadError("invalid wasm module: " + wt::take_error(err));
  std::shared_ptr<CompiledModule> cm(new CompiledModule());
  try {  // the module is valid, so the sections below parse; kinds and signatures as describe() names them
    wasm::Module m(wasm, len);
    std::vector<wasm::FuncType> types = wasm::read_types(m);
    std::vector<uint32_t> func_types;  // type index per function, imports first
    static const char* const kImportKind[] = {"func", "table", "memory", "global", "other"};
    for (const wasm::Import& im : wasm::read_imports(m)) {
      ImportDesc d{im.module, im.field, im.kind < 5 ? kImportKind[im.kind] : "other", ""};
      if (im.kind == 0) {
        func_types.push_back(im.type);
        d.sig = sig_string(types.at(im.type));
      }
      cm->imports_.push_back(std::move(d));
    }
    if (const wasm::Section* s = m.find(wasm::kFunction)) {
      wasm::Reader r = m.reader(*s);
      for (uint32_t n = r.u32(), i = 0; i < n; ++i) func_types.push_back(r.u32());
    }
    if (const wasm::Section* s = m.find(wasm::kExport)) {
      wasm::Reader r = m.reader(*s);
      for (uint32_t n = r.u32(), i = 0; i < n; ++i) {
        std::string name = r.name();
        uint8_t kind = r.u8();
        uint32_t idx = r.u32();
        std::string k = kind == 0 ? sig_string(types.at(func_types.at(idx))) : kind < 4 ? kImportKind[kind] : "other";
        cm->exports_.emplace_back(std::move(name), std::move(k));
      }
    }
  } catch (const std::exception& e) {
    throw ModuleLoadError(std::string("invalid wasm module: ") + e.what());
  }
  return cm;
}

std::string CompiledModule::serialize() const {
  if (!m_) throw std::runtime_error("module was only described, not compiled");
  wasm_byte_vec_t v{0, nullptr};
  wasmtime_error_t* err = api->wasmtime_module_serialize(m_, &v);
  if (err) throw std::runtime_error("cannot serialize module: " + wt::take_error(err));
  std::string out(v.data, v.size);
  api->wasm_byte_vec_delete(&v);
  return out;
}

static std::string kind_name(wasm_externkind_t k) {
  switch (k) {
    case 0: return "func";
    case 1: return "global";
    case 2: return "table";
    case 3: return "memory";
    default: return "other";
  }
}

void CompiledModule::describe() {
  wasm_importtype_vec_t iv{0, nullptr};
  api->wasmtime_module_imports(m_, &iv);
  for (size_t i = 0; i < iv.size; ++i) {
    const wasm_name_t* mod = api->wasm_importtype_module(iv.data[i]);
    const wasm_name_t* nm = api->wasm_importtype_name(iv.data[i]);
    const wasm_externtype_t* et = api->wasm_importtype_type(iv.data[i]);
    ImportDesc d{std::string(mod->data, mod->size), std::string(nm->data, nm->size),
                 kind_name(api->wasm_externtype_kind(et)), ""};
    if (d.kind == "func") d.sig = sig_of(api->wasm_externtype_as_functype_const(et));
    imports_.push_back(std::move(d));
  }
  api->wasm_importtype_vec_delete(&iv);
  wasm_exporttype_vec_t ev{0, nullptr};
  api->wasmtime_module_exports(m_, &ev);
  for (size_t i = 0; i < ev.size; ++i) {
    const wasm_name_t* nm = api->wasm_exporttype_name(ev.data[i]);
    const wasm_externtype_t* et = api->wasm_exporttype_type(ev.data[i]);
    std::string k = kind_name(api->wasm_externtype_kind(et));
    if (k == "func") k = sig_of(api->wasm_externtype_as_functype_const(et));
    exports_.emplace_back(std::string(nm->data, nm->size), k);
  }
  api->wasm_exporttype_vec_delete(&ev);
}

std::string CompiledModule::export_sig(const std::string& name) const {
  for (auto& e : exports_)
    if (e.first == name) return e.second;
  return "";
}

bool CompiledModule::has_export(const std::string& name) const {
  for (auto& e : exports_)
    if (e.first == name) return true;
  return false;
}

bool CompiledModule::imports_usegas() const {
  for (auto& i : imports_)
    if (i.module == "metering" && i.name == "usegas") return true;
  return false;
}

ExportNames export_names(Family fam) {
  if (fam == F1) return {"E", "F", "G", "H", "I", "J", "K", "L"};
  return {"memory", "__wasm_call_ctors", "handle", "main", "__indirect_function_table", "malloc",
          "__errno_location", "setThrew"};
}

std::vector<std::string> CompiledModule::check(Family fam) const {
  std::vector<std::string> problems;
  std::vector<std::string> unknown;
  for (auto& i : imports_) {
    if (i.kind != "func") {
      unknown.push_back(i.module + "." + i.name + " (" + i.kind + " import)");
      continue;
    }
    std::string real, why;
    int variant = 0;
    if (!resolve_import(fam, i.module, i.name, i.sig, real, variant, why))
      unknown.push_back(i.module + "." + i.name + " " + i.sig + ": " + why);
  }
  if (!unknown.empty()) {
    std::string s = "module has imports this host does not provide: ";
    for (size_t k = 0; k < unknown.size(); ++k) s += (k ? "; " : "") + unknown[k];
    problems.push_back(s);
  }
  ExportNames n = export_names(fam);
  if (export_sig(n.memory) != "memory") problems.push_back(std::string("missing memory export '") + n.memory + "'");
  std::string want = fam == W64 ? "jj:j" : "ii:i";
  std::string hs = export_sig(n.handle);
  if (hs.empty())
    problems.push_back(std::string("missing export '") + n.handle + "' (the handle function)");
  else if (hs != want)
    problems.push_back(std::string("export '") + n.handle + "' has type " + hs + ", expected " + want);
  return problems;
}

}  // namespace aocu::engine
