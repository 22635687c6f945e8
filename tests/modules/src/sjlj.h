/* Force-included into the Lua sources of the "invoke" error-handling mode (see sjlj.c).
 * Lua 5.3 uses LUAI_TRY exactly once, in luaD_rawrunprotected(L, f, ud); the macro calls f(L, ud)
 * through the host's invoke_* trampoline instead of setjmp. */
#ifndef AO_SJLJ_H
#define AO_SJLJ_H
struct lua_State;
int ao_sjlj_try(void (*f)(struct lua_State *, void *), struct lua_State *L, void *ud);
_Noreturn void ao_sjlj_throw(void);
#define luai_jmpbuf int /* unused: no setjmp */
#define LUAI_THROW(L, c) ao_sjlj_throw()
#define LUAI_TRY(L, c, a) \
  if (ao_sjlj_try(f, L, ud) && (c)->status == 0) (c)->status = -1;
#endif
