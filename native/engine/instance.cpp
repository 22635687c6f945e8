// Instance lifecycle, handle() calling (see docs/ABI.md), error rollback and state capture/restore.
#include "engine/instance.h"

#include <cmath>
#include <cstdio>
#include <cstring>

#include "engine/json_scan.h"
#include "engine/snapshot.h"

namespace aocu::engine {

using wt::api;

namespace {

constexpr uint64_t kFuelUnlimited = uint64_t(1) << 62;
constexpr uint64_t kDefaultFuel = 9000000000000000ULL;  // same number as the legacy default gas limit (9e15)
constexpr double kDefaultTimeoutS = 120.0;
constexpr double kInitTimeoutS = 600.0;
// Base refresh policy of the rollback journal: copy the state again once the execution time since the last
// copy reaches kBaseRatio x the cost of that copy (amortised cost <= 1/kBaseRatio of execution time).
constexpr double kBaseRatio = 50.0;
constexpr size_t kJournalMaxBytes = size_t(64) << 20;
constexpr size_t kJournalMaxEntries = 100000;

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

uint64_t heap_max_for(Family f) {
  switch (f) {
    case F1: case F2: return 524288000ULL;
    case F3: case F4: return 4294901760ULL;
    default: return 17179869184ULL;
  }
}

wasm_functype_t* functype_from_sig(const std::string& sig) {
  auto vec = [](const std::string& part) {
    std::vector<wasm_valtype_t*> v;
    for (char c : part) {
      wasm_valkind_t k = c == 'i' ? wt::WASM_I32 : c == 'j' ? wt::WASM_I64 : c == 'f' ? wt::WASM_F32 : wt::WASM_F64;
      v.push_back(api->wasm_valtype_new(k));
    }
    wasm_valtype_vec_t out{0, nullptr};
    api->wasm_valtype_vec_new(&out, v.size(), v.data());
    return out;
  };
  size_t c = sig.find(':');
  wasm_valtype_vec_t p = vec(sig.substr(0, c)), r = vec(sig.substr(c + 1));
  return api->wasm_functype_new(&p, &r);
}

size_t utf16_len(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) n += c >= 0xF0 ? 2 : 1;
  return n;
}

double secs_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Instance::Instance(std::shared_ptr<CompiledModule> m, Family fam, Limits lim, const StateImage* restore)
    : module_(std::move(m)), fam_(fam), lim_(lim) {
  if (!module_->compiled()) throw std::invalid_argument("the module was only described, not compiled");
  metered_ = module_->imports_usegas();
  try {
    build();
    lifecycle_init();
    if (restore) load_state(*restore, true);
    if (restore && (restore->image || restore->encoded)) {
      // The restored state is the rollback base as it is (a page image, or the encoded image, which is
      // small: its zero pages are not stored): no copy of memory before the first message, which would
      // cost more than the restore itself. A later refresh copies memory, so its cost (~0.5 s/GiB)
      // counts as the cost of this base.
      base_ = *restore;
      have_base_ = true;
      last_base_cost_s_ = static_cast<double>(restore->mem_size) * 0.5e-9;
    }
  } catch (...) {
    teardown();
    throw;
  }
}

Instance::~Instance() { teardown(); }

void Instance::teardown() {
  if (linker_) api->wasmtime_linker_delete(linker_);
  if (store_) api->wasmtime_store_delete(store_);
  linker_ = nullptr;
  store_ = nullptr;
  ctx_ = nullptr;
  bounds_.clear();
}

bool Instance::get_func(const char* name, wasmtime_func_t& out) {
  wasmtime_extern_t ex;
  std::memset(&ex, 0, sizeof ex);
  if (!api->wasmtime_instance_export_get(ctx_, &inst_, name, std::strlen(name), &ex)) return false;
  if (ex.kind != wt::WASMTIME_EXTERN_FUNC) return false;
  out = ex.of.func;
  return true;
}

void Instance::arm_limits(uint64_t fuel) {
  // A fuel-free engine (chosen by the caller only when fuel could not change the outcome) has no fuel to set.
  if (module_->fuel()) {
    wasmtime_error_t* e = api->wasmtime_context_set_fuel(ctx_, fuel);
    if (e) throw std::runtime_error("set_fuel: " + wt::take_error(e));
  }
  double t = lim_.timeout_s > 0 ? lim_.timeout_s : kDefaultTimeoutS;
  api->wasmtime_context_set_epoch_deadline(ctx_, static_cast<uint64_t>(std::ceil(t * 1000.0 / kEpochTickMs)) + 1);
}

void Instance::build() {
  Engine& eng = module_->engine();  // the configuration the code was compiled for
  st_ = std::make_unique<HostState>();
  st_->family = fam_;
  st_->inst = this;
  st_->heap_max = heap_max_for(fam_);
  st_->memory_limit = lim_.memory_limit;
  if (metered_ && lim_.compute_limit >= 0) st_->gas_limit = static_cast<uint64_t>(lim_.compute_limit);
  st_->fs.init(fam_ == F4 || fam_ == W64);
  store_ = api->wasmtime_store_new(eng.raw(), nullptr, nullptr);
  if (!store_) throw std::runtime_error("cannot create wasmtime store");
  ctx_ = api->wasmtime_store_context(store_);
  st_->ctx = ctx_;
  api->wasmtime_store_limiter(store_, lim_.memory_limit >= 0 ? lim_.memory_limit : -1, -1, -1, -1, -1);
  linker_ = api->wasmtime_linker_new(eng.raw());
  for (const ImportDesc& imp : module_->imports()) {
    std::string real, why;
    int variant = 0;
    if (imp.kind != "func") throw ModuleLoadError("unsupported non-function import " + imp.module + "." + imp.name);
    wasmtime_func_unchecked_callback_t cb = resolve_import(fam_, imp.module, imp.name, imp.sig, real, variant, why);
    if (!cb) throw ModuleLoadError("unknown import " + imp.module + "." + imp.name + " " + imp.sig + ": " + why);
    bounds_.push_back(std::make_unique<Bound>(Bound{st_.get(), imp.sig, variant, real}));
    wasm_functype_t* ft = functype_from_sig(imp.sig);
    wasmtime_error_t* e = api->wasmtime_linker_define_func_unchecked(
        linker_, imp.module.data(), imp.module.size(), imp.name.data(), imp.name.size(), ft, cb,
        bounds_.back().get(), nullptr);
    api->wasm_functype_delete(ft);
    if (e) throw ModuleLoadError("cannot define import " + imp.module + "." + imp.name + ": " + wt::take_error(e));
  }
  arm_limits(kFuelUnlimited);
  // Instantiation (the start function) and lifecycle_init (ctors, main) share one wall-clock deadline: the
  // per-call timeout when one is set, so a looping start function cannot hold the caller longer than a message.
  const double init_t = lim_.timeout_s > 0 ? lim_.timeout_s : kInitTimeoutS;
  api->wasmtime_context_set_epoch_deadline(ctx_, static_cast<uint64_t>(std::ceil(init_t * 1000.0 / kEpochTickMs)) + 1);
  wasm_trap_t* trap = nullptr;
  wasmtime_error_t* e = nullptr;
  {
    EpochActive ticking;
    e = api->wasmtime_linker_instantiate(linker_, ctx_, module_->raw(), &inst_, &trap);
  }
  if (e) throw std::runtime_error("instantiation failed: " + wt::take_error(e));
  if (trap) {
    wasmtime_trap_code_t code = 0;
    bool has_code = false;
    std::string msg = wt::take_trap(trap, &code, &has_code);
    if (has_code && code == wt::TRAP_INTERRUPT) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%g", init_t);
      throw std::runtime_error(std::string("instantiation trapped: wall-clock limit exceeded: execution interrupted after ") +
                               buf + " s");
    }
    throw std::runtime_error("instantiation trapped: " + msg);
  }

  ExportNames n = export_names(fam_);
  wasmtime_extern_t ex;
  std::memset(&ex, 0, sizeof ex);
  if (!api->wasmtime_instance_export_get(ctx_, &inst_, n.memory, std::strlen(n.memory), &ex) ||
      ex.kind != wt::WASMTIME_EXTERN_MEMORY)
    throw ModuleLoadError(std::string("module does not export its memory as '") + n.memory + "'");
  st_->memory = ex.of.memory;
  wasm_memorytype_t* mt = api->wasmtime_memory_type(ctx_, &st_->memory);
  const bool memory_is64 = api->wasmtime_memorytype_is64(mt);
  api->wasm_memorytype_delete(mt);
  // st_->mem64 is the pointer ABI (i64 pointers in signatures and in memory), which is the format's: a
  // wasm64 module lowered to a 32-bit memory (native/transform/mem64.cpp) keeps 64-bit pointers.
  st_->mem64 = fam_ == W64;
  if (fam_ != W64 && memory_is64) throw ModuleLoadError("wasm32 format but the module's memory is 64-bit");
  std::memset(&ex, 0, sizeof ex);
  if (api->wasmtime_instance_export_get(ctx_, &inst_, n.table, std::strlen(n.table), &ex) &&
      ex.kind == wt::WASMTIME_EXTERN_TABLE) {
    st_->has_table = true;
    st_->table = ex.of.table;
  }
  if (!get_func(n.handle, f_handle_)) throw ModuleLoadError(std::string("missing export '") + n.handle + "'");
  if (fam_ == F1) {
    get_func("M", f_stack_save_);
    get_func("N", f_stack_restore_);
    get_func("O", f_stack_alloc_);
  } else {
    if (!get_func("stackSave", f_stack_save_)) get_func("emscripten_stack_get_current", f_stack_save_);
    if (!get_func("stackRestore", f_stack_restore_)) get_func("_emscripten_stack_restore", f_stack_restore_);
    if (!get_func("stackAlloc", f_stack_alloc_)) get_func("_emscripten_stack_alloc", f_stack_alloc_);
  }
  get_func(n.malloc, f_malloc_);
  st_->f_stack_save = f_stack_save_;
  st_->f_stack_restore = f_stack_restore_;
  st_->f_malloc = f_malloc_;
  get_func(n.set_threw, st_->f_set_threw);
  get_func(n.errno_loc, st_->f_errno);
  initial_mem_ = memory_size();
}

bool Instance::call(const wasmtime_func_t& f, wasmtime_val_raw_t* vals, size_t n, std::string& err) {
  wasm_trap_t* trap = nullptr;
  st_->trap_reason.clear();
  st_->longjmp_pending = false;
  wasmtime_error_t* e = nullptr;
  {
    EpochActive ticking;
    e = api->wasmtime_func_call_unchecked(ctx_, &f, vals, n, &trap);
  }
  if (!e && !trap) return true;
  // host-raised traps arrive as errors, wasm traps as `trap`
  wasmtime_trap_code_t code = 0;
  bool has_code = false;
  std::string msg = trap ? wt::take_trap(trap, &code, &has_code) : wt::take_error(e);
  if (trap && e) wt::take_error(e);
  if (has_code && code == wt::TRAP_OUT_OF_FUEL) {
    err = "out of gas!";
  } else if (has_code && code == wt::TRAP_INTERRUPT) {
    double t = lim_.timeout_s > 0 ? lim_.timeout_s : kDefaultTimeoutS;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", t);
    err = std::string("wall-clock limit exceeded: execution interrupted after ") + buf + " s";
  } else if (st_->longjmp_pending) {
    err = "longjmp outside of any setjmp (unhandled Lua error?)";
  } else if (!st_->trap_reason.empty()) {
    err = st_->trap_reason;
  } else {
    err = clean_message(msg);
    if (err.rfind("wasm trap", 0) != 0) err = "wasm trap: " + err;
  }
  return false;
}

uint64_t Instance::stack_alloc(uint64_t size, std::string& err) {
  wasmtime_val_raw_t v[1];
  v[0].i64 = 0;
  if (st_->mem64) v[0].i64 = static_cast<int64_t>(size);
  else v[0].i32 = static_cast<int32_t>(size);
  const wasmtime_func_t& f = f_stack_alloc_.store_id ? f_stack_alloc_ : f_malloc_;
  if (!f.store_id) {
    err = "module exports neither a stack allocator nor malloc";
    return 0;
  }
  if (!call(f, v, 1, err)) return 0;
  uint64_t p = st_->mem64 ? static_cast<uint64_t>(v[0].i64) : static_cast<uint32_t>(v[0].i32);
  if (p == 0) err = "allocation of " + std::to_string(size) + " bytes for a handle() argument failed";
  return p;
}

void Instance::lifecycle_init() {
  ExportNames n = export_names(fam_);
  std::string err;
  wasmtime_func_t f{};
  wasmtime_val_raw_t v[2];
  std::memset(v, 0, sizeof v);
  auto fail = [&](const std::string& what) { throw std::runtime_error(what + " failed: " + err); };
  if (fam_ == F4 || fam_ == W64) {
    if (get_func("emscripten_stack_init", f) && !call(f, v, 1, err)) fail("emscripten_stack_init()");
    if (get_func("emscripten_stack_get_end", f)) {
      std::memset(v, 0, sizeof v);
      if (!call(f, v, 1, err)) fail("emscripten_stack_get_end()");
      uint64_t end = st_->mem64 ? static_cast<uint64_t>(v[0].i64) : static_cast<uint32_t>(v[0].i32);
      if (end == 0) end += 4;
      uint8_t* base = st_->mem_base();
      size_t size = st_->mem_size();
      if (end + 8 > size) throw std::runtime_error("stack end outside memory");
      const uint32_t c1 = 0x02135467, c2 = 0x89BACDFE, c0 = 0x63736D65;
      std::memcpy(base + end, &c1, 4);
      std::memcpy(base + end + 4, &c2, 4);
      std::memcpy(base, &c0, 4);
    }
  }
  std::memset(v, 0, sizeof v);
  if (get_func(n.ctors, f) && !call(f, v, 1, err)) fail("__wasm_call_ctors()");
  if ((fam_ == F1 || fam_ == F2 || fam_ == F3) && get_func(n.main, f)) {
    std::memset(v, 0, sizeof v);
    if (fam_ == F2) {
      // argv = [program name] on the stack, not popped afterwards (as emscripten's callMain)
      const std::string prog = "./this.program";
      uint64_t argv = stack_alloc(8, err);
      if (!argv) fail("main() argv allocation");
      uint64_t s = stack_alloc(prog.size() + 1, err);
      if (!s) fail("main() argv allocation");
      uint8_t* base = st_->mem_base();
      if (s + prog.size() + 1 > st_->mem_size() || argv + 8 > st_->mem_size())
        throw std::runtime_error("main() argv outside memory");
      std::memcpy(base + s, prog.c_str(), prog.size() + 1);
      uint32_t p32 = static_cast<uint32_t>(s), z = 0;
      std::memcpy(base + argv, &p32, 4);
      std::memcpy(base + argv + 4, &z, 4);
      v[0].i32 = 1;
      v[1].i32 = static_cast<int32_t>(argv);
    }
    if (!call(f, v, 2, err)) fail("main()");
  }
}

size_t Instance::memory_size() const { return st_->mem_size(); }
const uint8_t* Instance::memory_data() const { return st_->mem_base(); }

CallResult Instance::raw_call(const std::string& msg, const std::string& env) {
  CallResult r;
  HostState& st = *st_;
  st.gas_used = 0;
  st.limit_hit = false;
  st.urandom_key.clear();
  st.urandom_ctr = 0;
  st.cur_msg = &msg;
  const uint64_t fuel0 = metered_ ? kFuelUnlimited
                                  : (lim_.compute_limit >= 0 ? static_cast<uint64_t>(lim_.compute_limit) : kDefaultFuel);
  arm_limits(fuel0);
  std::string err;
  bool ok = true;
  wasmtime_val_raw_t sp[1];
  sp[0].i64 = 0;
  bool have_sp = f_stack_save_.store_id && f_stack_restore_.store_id;
  if (have_sp && !call(f_stack_save_, sp, 1, err)) ok = false;
  uint64_t pm = 0, pe = 0;
  if (ok) {
    // docs/ABI.md (message/env): formats 1/2 reserve (UTF-16 length x 4) + 1, the others UTF-8 length + 1;
    // msg first
    bool js16 = fam_ == F1 || fam_ == F2;
    uint64_t sm = js16 ? utf16_len(msg) * 4 + 1 : msg.size() + 1;
    uint64_t se = js16 ? utf16_len(env) * 4 + 1 : env.size() + 1;
    pm = stack_alloc(sm, err);
    if (pm) pe = stack_alloc(se, err);
    ok = pm && pe;
    if (ok) {
      uint8_t* base = st.mem_base();
      size_t size = st.mem_size();
      if (pm + msg.size() + 1 > size || pe + env.size() + 1 > size) {
        ok = false;
        err = "handle() arguments do not fit in memory";
      } else {
        std::memcpy(base + pm, msg.data(), msg.size());
        base[pm + msg.size()] = 0;
        std::memcpy(base + pe, env.data(), env.size());
        base[pe + env.size()] = 0;
      }
    }
  }
  std::string out;
  if (ok) {
    wasmtime_val_raw_t v[2];
    if (st.mem64) {
      v[0].i64 = static_cast<int64_t>(pm);
      v[1].i64 = static_cast<int64_t>(pe);
    } else {
      v[0].i64 = 0;
      v[1].i64 = 0;
      v[0].i32 = static_cast<int32_t>(pm);
      v[1].i32 = static_cast<int32_t>(pe);
    }
    auto th = std::chrono::steady_clock::now();
    ok = call(f_handle_, v, 2, err);
    last_handle_ns_ = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - th).count());
    if (ok) {
      // copy the returned C string now: it belongs to Lua and dies with the next call into the module
      uint64_t rp = st.mem64 ? static_cast<uint64_t>(v[0].i64) : static_cast<uint32_t>(v[0].i32);
      const uint8_t* base = st.mem_base();
      size_t size = st.mem_size();
      if (rp == 0 || rp >= size) {
        ok = false;
        err = rp == 0 ? "handle() returned a NULL string" : "handle() returned a pointer outside memory";
      } else {
        const void* z = std::memchr(base + rp, 0, size - rp);
        if (!z) {
          ok = false;
          err = "handle() returned an unterminated string";
        } else {
          out.assign(reinterpret_cast<const char*>(base + rp), static_cast<const uint8_t*>(z) - (base + rp));
        }
      }
    }
  }
  uint64_t left = fuel0;
  if (module_->fuel()) {
    wasmtime_error_t* fe = api->wasmtime_context_get_fuel(ctx_, &left);
    if (fe) wt::take_error(fe);
  }
  r.fuel = metered_ ? 0 : (fuel0 >= left ? fuel0 - left : 0);
  if (have_sp) {
    std::string e2;
    wasmtime_val_raw_t s2[1] = {sp[0]};
    arm_limits(kFuelUnlimited);
    if (!call(f_stack_restore_, s2, 1, e2) && ok) {
      ok = false;
      err = "stack restore failed: " + e2;
    }
  }
  r.gas = metered_ ? st.gas_used : 0;
  st.cur_msg = nullptr;
  if (!ok) {
    r.is_error = true;
    r.error = err;
  } else {
    Envelope envl = scan_envelope(out.data(), out.size());
    if (!envl.valid) {
      r.is_error = true;
      r.error = out.empty() ? "handle() returned an empty string (Lua failure in the C wrapper)"
                            : "handle() returned invalid JSON: " + envl.problem;
    } else if (!envl.ok) {
      r.is_error = true;
      r.error = envl.resp_is_string ? envl.resp_string
                                    : (envl.resp_end > envl.resp_begin
                                           ? out.substr(envl.resp_begin, envl.resp_end - envl.resp_begin)
                                           : std::string("handle() returned ok:false"));
      if (!envl.resp_is_string && envl.resp_end > envl.resp_begin) {
        // a thrown non-string value (Lua `error({code = 1})`): the loader throws it as is and the legacy CU
        // keeps it as the result's Error, so it is handed back with its JSON type as {"Error": <value>}
        r.has_response = true;
        r.response = "{\"Error\":" + r.error + "}";
      }
    } else {
      r.ok = true;
      r.has_response = true;
      r.response = envl.resp_end > envl.resp_begin ? out.substr(envl.resp_begin, envl.resp_end - envl.resp_begin)
                                                   : std::string("{}");
      if (envl.resp_has_error || envl.oom_output) {
        r.is_error = true;
        r.error = envl.resp_has_error ? envl.error_text : "not enough memory for buffer allocation";
      }
    }
  }
  if (r.is_error && st.limit_hit && lim_.memory_limit >= 0)
    r.error += " (memory limit of " + std::to_string(lim_.memory_limit) + " bytes reached)";
  return r;
}

CallResult Instance::handle(const std::string& msg, const std::string& env) {
  std::unique_lock<std::mutex> lock(busy_, std::try_to_lock);
  if (!lock.owns_lock()) throw std::runtime_error("instance is busy (concurrent use from several threads)");
  if (!broken_.empty()) throw std::runtime_error(broken_);
  if (!have_base_) take_base();
  auto t0 = std::chrono::steady_clock::now();
  CallResult r = raw_call(msg, env);
  double dt = secs_since(t0);
  if (!r.is_error) {
    journal_.push_back(Entry{msg, env, fnv1a(r.response)});
    journal_bytes_ += msg.size() + env.size() + 64;
    exec_since_base_s_ += dt;
    if (exec_since_base_s_ > kBaseRatio * last_base_cost_s_ || journal_bytes_ > kJournalMaxBytes ||
        journal_.size() > kJournalMaxEntries)
      take_base();
  } else {
    recover();
  }
  return r;
}

void Instance::take_base() {
  auto t0 = std::chrono::steady_clock::now();
  base_.mem_size = memory_size();
  base_.encoded = false;
  base_.image.reset();
  base_.memory.assign(reinterpret_cast<const char*>(memory_data()), base_.mem_size);  // reuses capacity
  StateImage g = capture(false /*unused memory*/);
  base_.globals = std::move(g.globals);
  base_.host = std::move(g.host);
  have_base_ = true;
  journal_.clear();
  journal_bytes_ = 0;
  exec_since_base_s_ = 0;
  last_base_cost_s_ = secs_since(t0);
  ++n_base_;
}

void Instance::recover() {
  // The failed call may have changed memory, globals and host state: go back to the base and replay the
  // messages applied since (execution is deterministic, so this reproduces the pre-call state exactly).
  ++n_recover_;
  try {
    if (memory_size() != base_.mem_size) {  // memory grew: wasm memories cannot shrink, rebuild the store
      teardown();
      build();
      lifecycle_init();
      load_state(base_, true);
    } else {
      load_state(base_, false);
    }
    for (const Entry& e : journal_) {
      CallResult r = raw_call(e.msg, e.env);
      ++n_replayed_;
      if (r.is_error || fnv1a(r.response) != e.digest) {
        broken_ = "instance state lost: replay after an error diverged (non-deterministic module?)";
        return;
      }
    }
  } catch (const std::exception& ex) {
    broken_ = std::string("instance state lost while rolling back: ") + ex.what();
  }
}

void Instance::load_state(const StateImage& s, bool fresh_store) {
  size_t cur = memory_size();
  if (s.mem_size > cur) {
    uint64_t pages = (s.mem_size - cur + kWasmPage - 1) / kWasmPage, prev = 0;
    wasmtime_error_t* e = api->wasmtime_memory_grow(ctx_, &st_->memory, pages, &prev);
    if (e) throw SnapshotDataError("cannot grow memory to the snapshot size: " + wt::take_error(e));
  }
  uint8_t* base = st_->mem_base();
  size_t size = memory_size();
  if (s.image) {
    if (s.image->size() != s.mem_size) throw SnapshotDataError("page image has the wrong size");
    if (creator_owns(base, s.mem_size))
      s.image->map_into(base);  // copy-on-write: nothing is read or written now
    else
      std::memcpy(base, s.image->data(), s.mem_size);
  } else if (s.encoded) {
    decode_memory(s.memory, base, size, std::min(cur, size));
  } else {
    if (s.memory.size() != s.mem_size) throw SnapshotDataError("raw memory image has the wrong size");
    std::memcpy(base, s.memory.data(), s.mem_size);
  }
  if (size > s.mem_size) std::memset(base + s.mem_size, 0, size - s.mem_size);
  for (const GlobalVal& g : s.globals) {
    wasmtime_extern_t ex;
    std::memset(&ex, 0, sizeof ex);
    if (!api->wasmtime_instance_export_get(ctx_, &inst_, g.name.data(), g.name.size(), &ex) ||
        ex.kind != wt::WASMTIME_EXTERN_GLOBAL)
      throw SnapshotDataError("snapshot global '" + g.name + "' is not exported by this module");
    wasmtime_val_t v;
    std::memset(&v, 0, sizeof v);
    api->wasmtime_global_get(ctx_, &ex.of.global, &v);
    if (v.kind != g.kind) throw SnapshotDataError("snapshot global '" + g.name + "' has a different type");
    std::memcpy(&v.of.i64, &g.bits, 8);
    if (g.kind == wt::WASMTIME_I32 || g.kind == wt::WASMTIME_F32) {
      int32_t lo;
      std::memcpy(&lo, &g.bits, 4);
      v.of.i64 = 0;
      std::memcpy(&v.of.i32, &lo, 4);
    }
    wasmtime_error_t* e = api->wasmtime_global_set(ctx_, &ex.of.global, &v);
    if (e) throw SnapshotDataError("cannot set global '" + g.name + "': " + wt::take_error(e));
  }
  try {
    st_->deserialize(s.host);
  } catch (const std::exception& e) {
    throw SnapshotDataError(std::string("snapshot host state: ") + e.what());
  }
  (void)fresh_store;
}

StateImage Instance::capture(bool encode) const {
  StateImage s;
  s.mem_size = memory_size();
  if (encode) {
    s.memory = encode_memory(memory_data(), s.mem_size);
    s.encoded = true;
  }
  for (size_t i = 0;; ++i) {
    char* name = nullptr;
    size_t nlen = 0;
    wasmtime_extern_t ex;
    std::memset(&ex, 0, sizeof ex);
    if (!api->wasmtime_instance_export_nth(ctx_, &inst_, i, &name, &nlen, &ex)) break;
    if (ex.kind != wt::WASMTIME_EXTERN_GLOBAL) continue;
    wasm_globaltype_t* gt = api->wasmtime_global_type(ctx_, &ex.of.global);
    bool mut = api->wasm_globaltype_mutability(gt) == wt::WASM_VAR;
    api->wasm_globaltype_delete(gt);
    if (!mut) continue;
    wasmtime_val_t v;
    std::memset(&v, 0, sizeof v);
    api->wasmtime_global_get(ctx_, &ex.of.global, &v);
    GlobalVal g{std::string(name, nlen), v.kind, 0};
    if (v.kind == wt::WASMTIME_I32 || v.kind == wt::WASMTIME_F32) {
      int32_t lo;
      std::memcpy(&lo, &v.of.i32, 4);
      g.bits = static_cast<uint32_t>(lo);
    } else if (v.kind == wt::WASMTIME_I64 || v.kind == wt::WASMTIME_F64) {
      std::memcpy(&g.bits, &v.of.i64, 8);
    } else {
      continue;  // reference-typed globals are not part of AO process state
    }
    s.globals.push_back(g);
  }
  s.host = st_->serialize();
  return s;
}

std::string Instance::rollback_stats() const {
  return "bases=" + std::to_string(n_base_) + " recoveries=" + std::to_string(n_recover_) +
         " replayed=" + std::to_string(n_replayed_) + " journal=" + std::to_string(journal_.size());
}

}  // namespace aocu::engine
