// Internal to the host-function files (engine/host*.cpp): the shared pieces every host function uses
// (deliberate-trap exception, bounds-checked memory view, typed argument access, errno values) and the
// declarations of the implementations, so the registry (host_registry.cpp) can bind functions defined in
// the other files. Not included outside those files. Import names and signatures: see docs/ABI.md (host imports).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "engine/host.h"

namespace aocu::engine::hostfn {

// Thrown inside host functions for a deliberate trap with a message (caught by the wrapper).
struct HostTrap {
  std::string msg;
};

constexpr int32_t E_BADF = 8, E_EXIST = 20, E_INVAL = 28, E_ISDIR = 31, E_NOENT = 44, E_NOSYS = 52,
                  E_NOTDIR = 54, E_NOTEMPTY = 55, E_NOTTY = 59, E_SPIPE = 70, E_RANGE = 68;

// Bounds-checked view of linear memory, re-read on every host call (memory may have grown/moved).
struct Mem {
  uint8_t* base;
  size_t size;
  explicit Mem(const HostState* st) : base(st->mem_base()), size(st->mem_size()) {}
  void check(uint64_t p, uint64_t n) const {
    if (p > size || n > size - p) throw HostTrap{"host function: pointer out of bounds"};
  }
  uint8_t* at(uint64_t p, uint64_t n) const {
    check(p, n);
    return base + p;
  }
  uint32_t u32(uint64_t p) const {
    uint32_t v;
    std::memcpy(&v, at(p, 4), 4);
    return v;
  }
  uint64_t u64(uint64_t p) const {
    uint64_t v;
    std::memcpy(&v, at(p, 8), 8);
    return v;
  }
  void w32(uint64_t p, uint32_t v) const { std::memcpy(at(p, 4), &v, 4); }
  void w64(uint64_t p, uint64_t v) const { std::memcpy(at(p, 8), &v, 8); }
  void w16(uint64_t p, uint16_t v) const { std::memcpy(at(p, 2), &v, 2); }
  // pointer-sized (size_t / void*) access
  uint64_t rptr(uint64_t p, bool m64) const { return m64 ? u64(p) : u32(p); }
  void wptr(uint64_t p, uint64_t v, bool m64) const { m64 ? w64(p, v) : w32(p, static_cast<uint32_t>(v)); }
  std::string cstr(uint64_t p, size_t max = 1 << 20) const {
    if (p >= size) throw HostTrap{"host function: string pointer out of bounds"};
    size_t lim = std::min<size_t>(size - p, max);
    const void* z = std::memchr(base + p, 0, lim);
    if (!z) throw HostTrap{"host function: unterminated string"};
    return std::string(reinterpret_cast<const char*>(base + p), static_cast<const uint8_t*>(z) - (base + p));
  }
};

// Arguments read by their *declared* wasm type, so one implementation serves wasm32 and wasm64 imports.
struct Args {
  wasmtime_val_raw_t* a;
  const Bound* b;
  size_t nparams() const { return b->sig.find(':'); }
  char t(size_t k) const { return b->sig[k]; }
  uint64_t u(size_t k) const {
    return t(k) == 'j' ? static_cast<uint64_t>(a[k].i64) : static_cast<uint64_t>(static_cast<uint32_t>(a[k].i32));
  }
  int64_t s(size_t k) const { return t(k) == 'j' ? a[k].i64 : static_cast<int64_t>(a[k].i32); }
  int32_t i(size_t k) const { return a[k].i32; }
  void ret(int64_t v) const { a[0].i64 = v; }  // low 32 bits serve i32 results (little-endian)
  void retd(double v) const { a[0].f64 = v; }
};

typedef void (*Impl)(HostState*, const Args&);

// ---- implementations, by file (each bound to one or more imports in host_registry.cpp)

// host.cpp: emscripten runtime, heap, environment, exit, metering, WeaveDrive
void h_abort(HostState*, const Args&);
void h_assert_fail(HostState* st, const Args& a);
void h_exit(HostState*, const Args& a);
void h_cxa_throw(HostState*, const Args&);
void h_dl(HostState*, const Args&);
void h_system(HostState* st, const Args& a);
void h_get_temp_ret0(HostState* st, const Args& a);
void h_set_temp_ret0(HostState* st, const Args& a);
void h_throw_longjmp(HostState* st, const Args&);
void h_memcpy(HostState* st, const Args& a);
void h_resize_heap(HostState* st, const Args& a);
void h_get_heap_max(HostState* st, const Args& a);
void h_mmap(HostState*, const Args& a);
void h_munmap(HostState*, const Args& a);
void h_environ_sizes_get(HostState* st, const Args& a);
void h_environ_get(HostState* st, const Args& a);
void h_proc_exit(HostState*, const Args& a);
void h_emscripten_err(HostState*, const Args&);
void h_wd_zero(HostState*, const Args& a);
void h_usegas(HostState* st, const Args& a);
void h_gas_used(HostState* st, const Args& a);

// host_time.cpp: clocks, timezone, gmtime/mktime/strftime
void h_date_zero(HostState*, const Args& a);
void h_date_counter(HostState* st, const Args& a);
void h_monotonic(HostState*, const Args& a);
void h_tzset(HostState* st, const Args& a);
void h_gmtime(HostState* st, const Args& a);
void h_mktime(HostState* st, const Args& a);
void h_strftime(HostState* st, const Args& a);
void h_clock_time_get(HostState*, const Args& a);

// host_fs.cpp: fd_* and the syscalls over MEMFS
void h_openat(HostState* st, const Args& a);
void h_fd_write(HostState* st, const Args& a);
void h_fd_read(HostState* st, const Args& a);
void h_fd_close(HostState* st, const Args& a);
void h_fd_seek(HostState* st, const Args& a);
void h_fd_sync(HostState*, const Args& a);
void h_fd_fdstat_get(HostState* st, const Args& a);
void h_stat64(HostState* st, const Args& a);
void h_fstat64(HostState* st, const Args& a);
void h_newfstatat(HostState* st, const Args& a);
void h_faccessat(HostState* st, const Args& a);
void h_ok_path0(HostState* st, const Args& a);
void h_ok_path1(HostState* st, const Args& a);
void h_zero(HostState*, const Args& a);
void h_fcntl(HostState* st, const Args& a);
void h_ioctl(HostState* st, const Args& a);
void h_dup3(HostState* st, const Args& a);
void h_unlinkat(HostState* st, const Args& a);
void h_rmdir(HostState* st, const Args& a);
void h_renameat(HostState* st, const Args& a);
void h_mkdirat(HostState* st, const Args& a);
void h_readlinkat(HostState* st, const Args& a);
void h_getcwd(HostState* st, const Args& a);
void h_ftruncate(HostState* st, const Args& a);

// host_invoke.cpp: invoke_* trampolines (setjmp/longjmp)
void h_invoke(HostState* st, const Args& a);

}  // namespace aocu::engine::hostfn
