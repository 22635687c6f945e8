/* JS-style SJLJ for Lua, written out by hand: the same protocol emscripten's SjLj lowering emits
 * (ao-ABI §5.4), without clang 14's wasm64 lowering, which calls malloc with an i32 size (a
 * signature mismatch that wasm-ld turns into a trap stub).
 *   try:   invoke_vjj / invoke_vii(table index of f, L, ud); the host calls the table entry and, if
 *          _emscripten_throw_longjmp unwinds through it, restores the stack pointer and calls
 *          setThrew(1, 0).
 *   throw: _emscripten_throw_longjmp(); Lua has already stored the status in its lua_longjmp. */
#include <stdint.h>

#include "sjlj.h"

#define AO_IMPORT(name) __attribute__((import_module("env"), import_name(name)))

#ifdef __wasm64__
AO_IMPORT("invoke_vjj") void ao_invoke(intptr_t fn, intptr_t a, intptr_t b);
#else
AO_IMPORT("invoke_vii") void ao_invoke(intptr_t fn, intptr_t a, intptr_t b);
#endif
AO_IMPORT("_emscripten_throw_longjmp") _Noreturn void ao_throw_longjmp(void);

static uintptr_t ao_threw;

/* Exported as setThrew, the name and signature (ptr, i32) the host calls after catching a longjmp. */
void setThrew(uintptr_t threw, int value) {
  (void)value;
  if (ao_threw == 0) ao_threw = threw;
}

int ao_sjlj_try(void (*f)(struct lua_State *, void *), struct lua_State *L, void *ud) {
  ao_threw = 0;
  ao_invoke((intptr_t)f, (intptr_t)L, (intptr_t)ud);
  int threw = ao_threw != 0;
  ao_threw = 0;
  return threw;
}

_Noreturn void ao_sjlj_throw(void) { ao_throw_longjmp(); }
