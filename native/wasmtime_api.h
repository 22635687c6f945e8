// The subset of wasmtime's C API (v50.0.1) that aocu uses, declared by hand.
// Why by hand: the PyPI wheel ships _libwasmtime.so without headers or SONAME, so the extension cannot
// link it; we dlopen() it at import time and resolve exactly these symbols. Struct layouts and signatures
// are copied from wasmtime-py 50.0.1 `_bindings.py` (generated from the C headers of the same version).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

extern "C" {

struct wasm_config_t;
struct wasm_engine_t;
struct wasm_valtype_t;
struct wasm_functype_t;
struct wasm_globaltype_t;
struct wasm_memorytype_t;
struct wasm_externtype_t;
struct wasm_importtype_t;
struct wasm_exporttype_t;
struct wasm_trap_t;
struct wasmtime_error_t;
struct wasmtime_module_t;
struct wasmtime_store_t;
struct wasmtime_context_t;
struct wasmtime_caller_t;
struct wasmtime_linker_t;

typedef uint8_t wasm_valkind_t;
typedef uint8_t wasm_externkind_t;
typedef uint8_t wasm_mutability_t;
typedef uint8_t wasmtime_valkind_t;
typedef uint8_t wasmtime_extern_kind_t;
typedef uint8_t wasmtime_trap_code_t;
typedef uint8_t wasmtime_opt_level_t;

struct wasm_byte_vec_t {
  size_t size;
  char* data;
};
typedef wasm_byte_vec_t wasm_name_t;
typedef wasm_byte_vec_t wasm_message_t;

struct wasm_valtype_vec_t {
  size_t size;
  wasm_valtype_t** data;
};
struct wasm_importtype_vec_t {
  size_t size;
  wasm_importtype_t** data;
};
struct wasm_exporttype_vec_t {
  size_t size;
  wasm_exporttype_t** data;
};

struct wasmtime_func_t {
  uint64_t store_id;
  void* __private;
};
struct wasmtime_table_t {
  struct {
    uint64_t store_id;
    uint32_t __private1;
  } a;
  uint32_t __private2;
};
typedef wasmtime_table_t wasmtime_memory_t;
typedef wasmtime_table_t wasmtime_tag_t;
struct wasmtime_global_t {
  uint64_t store_id;
  uint32_t __private1;
  uint32_t __private2;
  uint32_t __private3;
};
struct wasmtime_instance_t {
  uint64_t store_id;
  size_t __private;
};
union wasmtime_extern_union_t {
  wasmtime_func_t func;
  wasmtime_global_t global;
  wasmtime_table_t table;
  wasmtime_memory_t memory;
  void* sharedmemory;
  wasmtime_tag_t tag;
};
struct wasmtime_extern_t {
  wasmtime_extern_kind_t kind;
  wasmtime_extern_union_t of;
};
struct wasmtime_gcref_t {  // anyref/externref/exnref layout
  uint64_t store_id;
  uint32_t __private1;
  uint32_t __private2;
  void* __private3;
};
union wasmtime_valunion_t {
  int32_t i32;
  int64_t i64;
  float f32;
  double f64;
  wasmtime_gcref_t anyref;
  wasmtime_func_t funcref;
  uint8_t v128[16];
};
struct wasmtime_val_t {
  wasmtime_valkind_t kind;
  wasmtime_valunion_t of;
};
union wasmtime_val_raw_t {
  int32_t i32;
  int64_t i64;
  float f32;
  double f64;
  uint8_t v128[16];
  uint32_t anyref;
  uint32_t externref;
  uint32_t exnref;
  void* funcref;
};

typedef wasm_trap_t* (*wasmtime_func_unchecked_callback_t)(void* env, wasmtime_caller_t* caller,
                                                            wasmtime_val_raw_t* args_and_results,
                                                            size_t num_args_and_results);
typedef void (*aocu_finalizer_t)(void*);

// Host linear-memory creator (wasmtime/config.h): every memory of an engine is allocated by the embedder.
typedef uint8_t* (*wasmtime_memory_get_callback_t)(void* env, size_t* byte_size, size_t* byte_capacity);
typedef wasmtime_error_t* (*wasmtime_memory_grow_callback_t)(void* env, size_t new_size);
struct wasmtime_linear_memory_t {
  void* env;
  wasmtime_memory_get_callback_t get_memory;
  wasmtime_memory_grow_callback_t grow_memory;
  aocu_finalizer_t finalizer;
};
typedef wasmtime_error_t* (*wasmtime_new_memory_callback_t)(void* env, const wasm_memorytype_t* ty, size_t minimum,
                                                             size_t maximum, size_t reserved_size_in_bytes,
                                                             size_t guard_size_in_bytes,
                                                             wasmtime_linear_memory_t* memory_ret);
struct wasmtime_memory_creator_t {
  void* env;
  wasmtime_new_memory_callback_t new_memory;
  aocu_finalizer_t finalizer;
};

}  // extern "C"

namespace aocu::wt {

// Constants from wasm.h / wasmtime/val.h / wasmtime/extern.h / wasmtime/trap.h.
constexpr wasm_valkind_t WASM_I32 = 0, WASM_I64 = 1, WASM_F32 = 2, WASM_F64 = 3;
constexpr wasm_externkind_t WASM_EXTERN_FUNC = 0;
constexpr wasm_mutability_t WASM_VAR = 1;
constexpr wasmtime_valkind_t WASMTIME_I32 = 0, WASMTIME_I64 = 1, WASMTIME_F32 = 2, WASMTIME_F64 = 3,
                             WASMTIME_FUNCREF = 5;
constexpr wasmtime_extern_kind_t WASMTIME_EXTERN_FUNC = 0, WASMTIME_EXTERN_GLOBAL = 1,
                                 WASMTIME_EXTERN_TABLE = 2, WASMTIME_EXTERN_MEMORY = 3;
constexpr wasmtime_trap_code_t TRAP_STACK_OVERFLOW = 0, TRAP_INTERRUPT = 10, TRAP_OUT_OF_FUEL = 11;
constexpr wasmtime_opt_level_t OPT_SPEED = 1;

// X-macro: (name, return type, argument list). One table drives the declarations and the dlsym loop.
#define AOCU_WASMTIME_FUNCS(X)                                                                          \
  X(wasm_config_new, wasm_config_t*, (void))                                                            \
  X(wasmtime_config_consume_fuel_set, void, (wasm_config_t*, bool))                                     \
  X(wasmtime_config_epoch_interruption_set, void, (wasm_config_t*, bool))                               \
  X(wasmtime_config_cranelift_nan_canonicalization_set, void, (wasm_config_t*, bool))                   \
  X(wasmtime_config_cranelift_opt_level_set, void, (wasm_config_t*, wasmtime_opt_level_t))              \
  X(wasmtime_config_wasm_threads_set, void, (wasm_config_t*, bool))                                     \
  X(wasmtime_config_wasm_relaxed_simd_deterministic_set, void, (wasm_config_t*, bool))                  \
  X(wasmtime_config_wasm_memory64_set, void, (wasm_config_t*, bool))                                    \
  X(wasmtime_config_wasm_exceptions_set, void, (wasm_config_t*, bool))                                  \
  X(wasmtime_config_wasm_reference_types_set, void, (wasm_config_t*, bool))                             \
  X(wasmtime_config_max_wasm_stack_set, void, (wasm_config_t*, size_t))                                 \
  X(wasmtime_config_parallel_compilation_set, void, (wasm_config_t*, bool))                             \
  X(wasmtime_config_host_memory_creator_set, void, (wasm_config_t*, const wasmtime_memory_creator_t*))  \
  X(wasmtime_error_new, wasmtime_error_t*, (const char*))                                               \
  X(wasmtime_config_memory_init_cow_set, void, (wasm_config_t*, bool))                                  \
  X(wasm_engine_new_with_config, wasm_engine_t*, (wasm_config_t*))                                      \
  X(wasm_engine_delete, void, (wasm_engine_t*))                                                         \
  X(wasmtime_engine_increment_epoch, void, (wasm_engine_t*))                                            \
  X(wasmtime_module_new, wasmtime_error_t*, (wasm_engine_t*, const uint8_t*, size_t, wasmtime_module_t**)) \
  X(wasmtime_module_delete, void, (wasmtime_module_t*))                                                 \
  X(wasmtime_module_validate, wasmtime_error_t*, (wasm_engine_t*, const uint8_t*, size_t))              \
  X(wasmtime_module_serialize, wasmtime_error_t*, (wasmtime_module_t*, wasm_byte_vec_t*))               \
  X(wasmtime_module_deserialize, wasmtime_error_t*,                                                     \
    (wasm_engine_t*, const uint8_t*, size_t, wasmtime_module_t**))                                      \
  X(wasmtime_module_imports, void, (const wasmtime_module_t*, wasm_importtype_vec_t*))                  \
  X(wasmtime_module_exports, void, (const wasmtime_module_t*, wasm_exporttype_vec_t*))                  \
  X(wasm_importtype_module, const wasm_name_t*, (const wasm_importtype_t*))                             \
  X(wasm_importtype_name, const wasm_name_t*, (const wasm_importtype_t*))                               \
  X(wasm_importtype_type, const wasm_externtype_t*, (const wasm_importtype_t*))                         \
  X(wasm_importtype_vec_delete, void, (wasm_importtype_vec_t*))                                         \
  X(wasm_exporttype_name, const wasm_name_t*, (const wasm_exporttype_t*))                               \
  X(wasm_exporttype_type, const wasm_externtype_t*, (const wasm_exporttype_t*))                         \
  X(wasm_exporttype_vec_delete, void, (wasm_exporttype_vec_t*))                                         \
  X(wasm_externtype_kind, wasm_externkind_t, (const wasm_externtype_t*))                                \
  X(wasm_externtype_as_functype_const, const wasm_functype_t*, (const wasm_externtype_t*))              \
  X(wasm_functype_new, wasm_functype_t*, (wasm_valtype_vec_t*, wasm_valtype_vec_t*))                    \
  X(wasm_functype_delete, void, (wasm_functype_t*))                                                     \
  X(wasm_functype_params, const wasm_valtype_vec_t*, (const wasm_functype_t*))                          \
  X(wasm_functype_results, const wasm_valtype_vec_t*, (const wasm_functype_t*))                         \
  X(wasm_valtype_new, wasm_valtype_t*, (wasm_valkind_t))                                                \
  X(wasm_valtype_kind, wasm_valkind_t, (const wasm_valtype_t*))                                         \
  X(wasm_valtype_vec_new, void, (wasm_valtype_vec_t*, size_t, wasm_valtype_t* const*))                  \
  X(wasm_byte_vec_delete, void, (wasm_byte_vec_t*))                                                     \
  X(wasmtime_error_message, void, (const wasmtime_error_t*, wasm_name_t*))                              \
  X(wasmtime_error_delete, void, (wasmtime_error_t*))                                                   \
  X(wasmtime_trap_new, wasm_trap_t*, (const char*, size_t))                                             \
  X(wasm_trap_message, void, (const wasm_trap_t*, wasm_message_t*))                                     \
  X(wasm_trap_delete, void, (wasm_trap_t*))                                                             \
  X(wasmtime_trap_code, bool, (const wasm_trap_t*, wasmtime_trap_code_t*))                              \
  X(wasmtime_store_new, wasmtime_store_t*, (wasm_engine_t*, void*, aocu_finalizer_t))                   \
  X(wasmtime_store_delete, void, (wasmtime_store_t*))                                                   \
  X(wasmtime_store_context, wasmtime_context_t*, (wasmtime_store_t*))                                   \
  X(wasmtime_store_limiter, void, (wasmtime_store_t*, int64_t, int64_t, int64_t, int64_t, int64_t))     \
  X(wasmtime_context_set_fuel, wasmtime_error_t*, (wasmtime_context_t*, uint64_t))                      \
  X(wasmtime_context_get_fuel, wasmtime_error_t*, (const wasmtime_context_t*, uint64_t*))               \
  X(wasmtime_context_set_epoch_deadline, void, (wasmtime_context_t*, uint64_t))                         \
  X(wasmtime_linker_new, wasmtime_linker_t*, (wasm_engine_t*))                                          \
  X(wasmtime_linker_delete, void, (wasmtime_linker_t*))                                                 \
  X(wasmtime_linker_define_func_unchecked, wasmtime_error_t*,                                           \
    (wasmtime_linker_t*, const char*, size_t, const char*, size_t, const wasm_functype_t*,              \
     wasmtime_func_unchecked_callback_t, void*, aocu_finalizer_t))                                      \
  X(wasmtime_linker_instantiate, wasmtime_error_t*,                                                     \
    (const wasmtime_linker_t*, wasmtime_context_t*, const wasmtime_module_t*, wasmtime_instance_t*,     \
     wasm_trap_t**))                                                                                    \
  X(wasmtime_instance_export_get, bool,                                                                 \
    (wasmtime_context_t*, const wasmtime_instance_t*, const char*, size_t, wasmtime_extern_t*))         \
  X(wasmtime_instance_export_nth, bool,                                                                 \
    (wasmtime_context_t*, const wasmtime_instance_t*, size_t, char**, size_t*, wasmtime_extern_t*))     \
  X(wasmtime_func_call, wasmtime_error_t*,                                                              \
    (wasmtime_context_t*, const wasmtime_func_t*, const wasmtime_val_t*, size_t, wasmtime_val_t*,       \
     size_t, wasm_trap_t**))                                                                            \
  X(wasmtime_func_call_unchecked, wasmtime_error_t*,                                                    \
    (wasmtime_context_t*, const wasmtime_func_t*, wasmtime_val_raw_t*, size_t, wasm_trap_t**))          \
  X(wasmtime_caller_context, wasmtime_context_t*, (wasmtime_caller_t*))                                 \
  X(wasmtime_memory_data, uint8_t*, (const wasmtime_context_t*, const wasmtime_memory_t*))              \
  X(wasmtime_memory_data_size, size_t, (const wasmtime_context_t*, const wasmtime_memory_t*))           \
  X(wasmtime_memory_grow, wasmtime_error_t*,                                                            \
    (wasmtime_context_t*, const wasmtime_memory_t*, uint64_t, uint64_t*))                               \
  X(wasmtime_memory_type, wasm_memorytype_t*, (const wasmtime_context_t*, const wasmtime_memory_t*))    \
  X(wasmtime_memorytype_is64, bool, (const wasm_memorytype_t*))                                         \
  X(wasmtime_memorytype_maximum, bool, (const wasm_memorytype_t*, uint64_t*))                           \
  X(wasm_memorytype_delete, void, (wasm_memorytype_t*))                                                 \
  X(wasmtime_table_get, bool,                                                                           \
    (wasmtime_context_t*, const wasmtime_table_t*, uint64_t, wasmtime_val_t*))                          \
  X(wasmtime_global_get, void, (wasmtime_context_t*, const wasmtime_global_t*, wasmtime_val_t*))        \
  X(wasmtime_global_set, wasmtime_error_t*,                                                             \
    (wasmtime_context_t*, const wasmtime_global_t*, const wasmtime_val_t*))                             \
  X(wasmtime_global_type, wasm_globaltype_t*, (const wasmtime_context_t*, const wasmtime_global_t*))    \
  X(wasm_globaltype_mutability, wasm_mutability_t, (const wasm_globaltype_t*))                          \
  X(wasm_globaltype_content, const wasm_valtype_t*, (const wasm_globaltype_t*))                         \
  X(wasm_globaltype_delete, void, (wasm_globaltype_t*))

struct Api {
#define AOCU_WT_FIELD(name, ret, args) ret(*name) args = nullptr;
  AOCU_WASMTIME_FUNCS(AOCU_WT_FIELD)
#undef AOCU_WT_FIELD
};

// The resolved table; valid after load_api() returned true. Null before.
extern const Api* api;

// dlopen()s the library at `path` and resolves every symbol above. On failure returns false and sets
// `err` naming the missing symbols (or the dlopen error). Idempotent once it succeeded.
bool load_api(const std::string& path, std::string& err);

// Takes ownership of a wasmtime_error_t / wasm_trap_t and returns its message.
std::string take_error(wasmtime_error_t* e);
std::string take_trap(wasm_trap_t* t, wasmtime_trap_code_t* code_out, bool* has_code);

}  // namespace aocu::wt
