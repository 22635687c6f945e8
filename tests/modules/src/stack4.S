# Stack helpers named as newer emscripten exports them (format 4 / wasm64 glue calls these).
.globl _emscripten_stack_restore
.globl _emscripten_stack_alloc

#ifdef __wasm64__
#define PTR i64
#define MASK 0xfffffffffffffff0
#else
#define PTR i32
#define MASK 0xfffffff0
#endif

.globaltype __stack_pointer, PTR

_emscripten_stack_restore:
  .functype _emscripten_stack_restore(PTR) -> ()
  local.get 0
  global.set __stack_pointer
  end_function

_emscripten_stack_alloc:
  .functype _emscripten_stack_alloc(PTR) -> (PTR)
  .local PTR
  global.get __stack_pointer
  local.get 0
  PTR.sub
  PTR.const MASK
  PTR.and
  local.tee 1
  global.set __stack_pointer
  local.get 1
  end_function
