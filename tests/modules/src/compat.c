/* Import-shape shim: makes an emscripten 3.1.6 build import exactly the host functions a real AO
 * module of the target Module-Format imports (ao-ABI §3.2/§3.3), instead of 3.1.6's own JS-library
 * names (clock, time, difftime, __clock_gettime, __syscall_open/unlink/rename, ...).
 *
 *   AO_COMPAT_FORMAT == 1 : as 2 without emscripten_get_now (format 1 has only the 30 imports of §3.1;
 *                           build.py then renames imports/exports to the minified letters).
 *   AO_COMPAT_FORMAT == 2 : wasm32-unknown-emscripten2 names (system, abort, emscripten_memcpy_big,
 *                           _emscripten_date_now, 3-argument _tzset_js, pointer-based _localtime_js).
 *   AO_COMPAT_FORMAT == 3 : wasm32-unknown-emscripten3 names (as 4, but abort and emscripten_memcpy_js).
 *   AO_COMPAT_FORMAT == 4 : wasm32-unknown-emscripten4 / -metering and the wasm64 formats
 *                           (_emscripten_system, _abort_js, _emscripten_memcpy_js, emscripten_date_now,
 *                           4-argument _tzset_js, value-based _localtime_js/_gmtime_js, no tempRet imports).
 *
 * Every function defined here replaces a JS-library function of emscripten 3.1.6 (or a weak libc
 * definition), so the linker resolves it natively and only the imports declared below remain. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define AO_IMPORT(name) __attribute__((import_module("env"), import_name(name)))

#define AT_FDCWD_ (-100)

/* --- syscalls -----------------------------------------------------------------------------------
 * 3.1.6 declares every syscall as long(long...) (all i64 under memory64) and still uses the pre-*at
 * forms for open/unlink/rename. Real modules import the newer prototypes: int fd/flags, pointer-sized
 * paths and varargs pointers. Each 3.1.6 syscall Lua can reach is forwarded to such an import. */
AO_IMPORT("__syscall_openat") int ao_sys_openat(int dirfd, intptr_t path, int flags, intptr_t varargs);
AO_IMPORT("__syscall_unlinkat") int ao_sys_unlinkat(int dirfd, intptr_t path, int flags);
AO_IMPORT("__syscall_renameat") int ao_sys_renameat(int olddirfd, intptr_t oldpath, int newdirfd, intptr_t newpath);
AO_IMPORT("__syscall_rmdir") int ao_sys_rmdir(intptr_t path);
AO_IMPORT("__syscall_fcntl64") int ao_sys_fcntl64(int fd, int cmd, intptr_t varargs);
AO_IMPORT("__syscall_ioctl") int ao_sys_ioctl(int fd, int request, intptr_t varargs);
AO_IMPORT("__syscall_dup3") int ao_sys_dup3(int fd, int suggestfd, int flags);
AO_IMPORT("__syscall_lstat64") int ao_sys_lstat64(intptr_t path, intptr_t buf);
AO_IMPORT("__syscall_stat64") int ao_sys_stat64(intptr_t path, intptr_t buf);
AO_IMPORT("__syscall_fstat64") int ao_sys_fstat64(int fd, intptr_t buf);
AO_IMPORT("__syscall_readlinkat") int ao_sys_readlinkat(int dirfd, intptr_t path, intptr_t buf, intptr_t bufsize);

/* wasm va_list is a pointer to the packed argument buffer: pass it on as the varargs pointer. */
#define VARARGS_PTR(last) \
  va_list ap;             \
  va_start(ap, last);     \
  intptr_t varargs = (intptr_t)ap; \
  va_end(ap)

long __syscall_open(long path, long flags, ...) {
  VARARGS_PTR(flags);
  return ao_sys_openat(AT_FDCWD_, (intptr_t)path, (int)flags, varargs);
}
long __syscall_openat(long dirfd, long path, long flags, ...) {
  VARARGS_PTR(flags);
  return ao_sys_openat((int)dirfd, (intptr_t)path, (int)flags, varargs);
}
long __syscall_fcntl64(long fd, long cmd, ...) {
  VARARGS_PTR(cmd);
  return ao_sys_fcntl64((int)fd, (int)cmd, varargs);
}
long __syscall_ioctl(long fd, long request, ...) {
  VARARGS_PTR(request);
  return ao_sys_ioctl((int)fd, (int)request, varargs);
}
long __syscall_unlink(long path) { return ao_sys_unlinkat(AT_FDCWD_, (intptr_t)path, 0); }
long __syscall_unlinkat(long dirfd, long path, long flags) {
  return ao_sys_unlinkat((int)dirfd, (intptr_t)path, (int)flags);
}
long __syscall_rename(long old_path, long new_path) {
  return ao_sys_renameat(AT_FDCWD_, (intptr_t)old_path, AT_FDCWD_, (intptr_t)new_path);
}
long __syscall_renameat(long olddirfd, long oldpath, long newdirfd, long newpath) {
  return ao_sys_renameat((int)olddirfd, (intptr_t)oldpath, (int)newdirfd, (intptr_t)newpath);
}
long __syscall_rmdir(long path) { return ao_sys_rmdir((intptr_t)path); }
long __syscall_dup3(long fd, long suggestfd, long flags) { return ao_sys_dup3((int)fd, (int)suggestfd, (int)flags); }
long __syscall_lstat64(long path, long buf) { return ao_sys_lstat64((intptr_t)path, (intptr_t)buf); }
long __syscall_stat64(long path, long buf) { return ao_sys_stat64((intptr_t)path, (intptr_t)buf); }
long __syscall_fstat64(long fd, long buf) { return ao_sys_fstat64((int)fd, (intptr_t)buf); }
long __syscall_readlinkat(long dirfd, long path, long buf, long bufsize) {
  return ao_sys_readlinkat((int)dirfd, (intptr_t)path, (intptr_t)buf, (intptr_t)bufsize);
}

/* --- clocks ------------------------------------------------------------------------------------ */
#if AO_COMPAT_FORMAT <= 2
AO_IMPORT("_emscripten_date_now") double ao_date_now(void);
#else
AO_IMPORT("emscripten_date_now") double ao_date_now(void);
#endif
#if AO_COMPAT_FORMAT == 1
#define ao_get_now ao_date_now
#else
AO_IMPORT("emscripten_get_now") double ao_get_now(void);
#endif

time_t time(time_t *t) {
  time_t now = (time_t)(ao_date_now() / 1000.0);
  if (t) *t = now;
  return now;
}

double difftime(time_t t1, time_t t0) { return (double)t1 - (double)t0; }

clock_t clock(void) {
  static double start = -1;
  double now = ao_get_now();
  if (start < 0) start = now;
  return (clock_t)((now - start) * (CLOCKS_PER_SEC / 1000));
}

int __clock_gettime(clockid_t clk, struct timespec *ts) {
  double ms;
  if (clk == CLOCK_REALTIME) {
    ms = ao_date_now();
  } else if (clk == CLOCK_MONOTONIC) {
    ms = ao_get_now();
  } else {
    errno = EINVAL;
    return -1;
  }
  ts->tv_sec = (time_t)(ms / 1000.0);
  ts->tv_nsec = (long)((ms - (double)ts->tv_sec * 1000.0) * 1000000.0);
  return 0;
}

int clock_gettime(clockid_t clk, struct timespec *ts) { return __clock_gettime(clk, ts); }

#if AO_COMPAT_FORMAT <= 2
/* 3.1.6 declares emscripten_memcpy_big returning dest; the format-2 import returns nothing. */
AO_IMPORT("emscripten_memcpy_big") void ao_memcpy_big(void *dest, const void *src, size_t n);

void *emscripten_memcpy_big(void *restrict dest, const void *restrict src, size_t n) {
  ao_memcpy_big(dest, src, n);
  return dest;
}
#endif

#if AO_COMPAT_FORMAT >= 3
/* --- format-3 / format-4 / wasm64 names ------------------------------------------------------- */
AO_IMPORT("_emscripten_system") int ao_emscripten_system(const char *command);
#if AO_COMPAT_FORMAT == 3
AO_IMPORT("emscripten_memcpy_js") void ao_memcpy_js(void *dest, const void *src, size_t n);
#else
AO_IMPORT("_emscripten_memcpy_js") void ao_memcpy_js(void *dest, const void *src, size_t n);
AO_IMPORT("_abort_js") _Noreturn void ao_abort_js(void);
_Noreturn void abort(void) { ao_abort_js(); }
#endif
AO_IMPORT("_tzset_js") void ao_tzset_js(long *timezone, int *daylight, char *std_name, char *dst_name);
AO_IMPORT("_localtime_js") void ao_localtime_js(int64_t t, struct tm *tm);
AO_IMPORT("_gmtime_js") void ao_gmtime_js(int64_t t, struct tm *tm);
AO_IMPORT("_mktime_js") long ao_mktime_js(struct tm *tm);

/* Newer emscripten's libc system(): the host returns -errno (-52 = ENOSYS); nothing is executed. */
int system(const char *command) {
  int r = ao_emscripten_system(command);
  if (r < 0) {
    errno = -r;
    return -1;
  }
  return r;
}

void *emscripten_memcpy_big(void *restrict dest, const void *restrict src, size_t n) {
  ao_memcpy_js(dest, src, n);
  return dest;
}

long timezone = 0;
int daylight = 0;
char *tzname[2] = {0, 0};
static char std_name[17];
static char dst_name[17];

void tzset(void) {
  ao_tzset_js(&timezone, &daylight, std_name, dst_name);
  tzname[0] = std_name;
  tzname[1] = dst_name;
}

time_t mktime(struct tm *tm) {
  tzset();
  return (time_t)ao_mktime_js(tm);
}

struct tm *__localtime_r(const time_t *restrict t, struct tm *restrict tm) {
  tzset();
  ao_localtime_js((int64_t)*t, tm);
  tm->__tm_zone = tm->tm_isdst ? tzname[1] : tzname[0];
  return tm;
}

struct tm *__gmtime_r(const time_t *restrict t, struct tm *restrict tm) {
  tzset();
  ao_gmtime_js((int64_t)*t, tm);
  tm->tm_isdst = 0;
  tm->__tm_gmtoff = 0;
  tm->__tm_zone = "GMT";
  return tm;
}

struct tm *localtime_r(const time_t *restrict t, struct tm *restrict tm) { return __localtime_r(t, tm); }
struct tm *gmtime_r(const time_t *restrict t, struct tm *restrict tm) { return __gmtime_r(t, tm); }

/* tempRet register lives in the module (format 4 exports _emscripten_tempret_set, imports nothing). */
static int32_t ao_tempret;
int32_t getTempRet0(void) { return ao_tempret; }
void setTempRet0(int32_t v) { ao_tempret = v; }
__attribute__((used, export_name("_emscripten_tempret_set"))) void ao_tempret_set(int32_t v) { ao_tempret = v; }
#endif

#ifdef __wasm64__
/* clang 14 calls the binary128 comparison libcalls with an i32 result, but emscripten 3.1.6's wasm64
 * compiler-rt defines them returning long (i64); wasm-ld replaces such mismatched calls with a trap
 * stub, so strtod/fmodl would trap. Same semantics as compiler-rt's fp_compare_impl.inc. */
typedef union {
  long double f;
  __int128 i;
} ao_quad;

#define AO_Q_ABS ((((unsigned __int128)0x7fffffffffffffffULL) << 64) | 0xffffffffffffffffULL)
#define AO_Q_INF (((unsigned __int128)0x7fff000000000000ULL) << 64)

static int ao_qcmp(long double a, long double b, int unordered) {
  ao_quad x = {a}, y = {b};
  __int128 ai = x.i, bi = y.i;
  unsigned __int128 aabs = (unsigned __int128)ai & AO_Q_ABS, babs = (unsigned __int128)bi & AO_Q_ABS;
  if (aabs > AO_Q_INF || babs > AO_Q_INF) return unordered;
  if ((aabs | babs) == 0) return 0;
  if ((ai & bi) >= 0) return ai < bi ? -1 : (ai == bi ? 0 : 1);
  return ai > bi ? -1 : (ai == bi ? 0 : 1);
}

int __letf2(long double a, long double b) { return ao_qcmp(a, b, 1); }
int __cmptf2(long double a, long double b) { return ao_qcmp(a, b, 1); }
int __eqtf2(long double a, long double b) { return ao_qcmp(a, b, 1); }
int __lttf2(long double a, long double b) { return ao_qcmp(a, b, 1); }
int __netf2(long double a, long double b) { return ao_qcmp(a, b, 1); }
int __getf2(long double a, long double b) { return ao_qcmp(a, b, -1); }
int __gttf2(long double a, long double b) { return ao_qcmp(a, b, -1); }
int __unordtf2(long double a, long double b) {
  ao_quad x = {a}, y = {b};
  return ((unsigned __int128)x.i & AO_Q_ABS) > AO_Q_INF || ((unsigned __int128)y.i & AO_Q_ABS) > AO_Q_INF;
}
#endif
