// Host functions for the legacy AO module formats (AO-ABI §3–§5). Every callback catches everything and
// turns it into a wasm trap: no C++ exception may unwind through wasmtime frames.
#include "engine/host.h"

#include <cmath>
#include <cstring>
#include <ctime>
#include <stdexcept>

#include "hash.h"

namespace aocu::engine {

using wt::api;

std::string clean_message(const std::string& msg) {
  // wasmtime errors carry a backtrace and a "Caused by:" chain: keep the root cause only
  size_t k = msg.rfind("Caused by:");
  std::string s = k == std::string::npos ? msg : msg.substr(k + 10);
  size_t b = s.find_first_not_of(" \n\t");
  if (b == std::string::npos) return msg;
  s = s.substr(b);
  size_t e = s.find_last_not_of(" \n\t");
  s = s.substr(0, e + 1);
  if (k == std::string::npos) {
    size_t nl = s.find('\n');
    if (nl != std::string::npos) s = s.substr(0, nl);
  }
  return s;
}

wasm_trap_t* make_trap(const std::string& msg) { return api->wasmtime_trap_new(msg.data(), msg.size()); }

std::string sig_of(const wasm_functype_t* ft) {
  auto enc = [](const wasm_valtype_vec_t* v) {
    std::string s;
    for (size_t i = 0; i < v->size; ++i) {
      switch (api->wasm_valtype_kind(v->data[i])) {
        case wt::WASM_I32: s += 'i'; break;
        case wt::WASM_I64: s += 'j'; break;
        case wt::WASM_F32: s += 'f'; break;
        case wt::WASM_F64: s += 'd'; break;
        default: s += 'x';
      }
    }
    return s;
  };
  return enc(api->wasm_functype_params(ft)) + ":" + enc(api->wasm_functype_results(ft));
}

uint8_t* HostState::mem_base() const { return api->wasmtime_memory_data(ctx, &memory); }
size_t HostState::mem_size() const { return api->wasmtime_memory_data_size(ctx, &memory); }

namespace {

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

// ---------------------------------------------------------------- helpers

std::string path_arg(const Mem& m, uint64_t p) { return MemFs::normalise(m.cstr(p, 4096)); }

void write_urandom(HostState* st, uint8_t* dst, size_t n) {
  // Deterministic /dev/urandom: SHA-256(key || counter) blocks, key = SHA-256("aocu/urandom/v1\0" || message
  // JSON) of the message being handled, counter restarting at 0 per message (see cu/engine docs).
  if (st->urandom_key.empty()) {
    std::string seed("aocu/urandom/v1", 16);
    if (st->cur_msg) seed += *st->cur_msg;
    auto k = aocu::hash::sha256(reinterpret_cast<const uint8_t*>(seed.data()), seed.size());
    st->urandom_key.assign(reinterpret_cast<const char*>(k.data()), k.size());
    st->urandom_ctr = 0;
  }
  while (n) {
    uint8_t buf[40];
    std::memcpy(buf, st->urandom_key.data(), std::min<size_t>(32, st->urandom_key.size()));
    if (st->urandom_key.size() < 32) std::memset(buf + st->urandom_key.size(), 0, 32 - st->urandom_key.size());
    std::memcpy(buf + 32, &st->urandom_ctr, 8);
    ++st->urandom_ctr;
    auto d = aocu::hash::sha256(buf, sizeof buf);
    size_t k = std::min<size_t>(n, d.size());
    std::memcpy(dst, d.data(), k);
    dst += k;
    n -= k;
  }
}

// ---------------------------------------------------------------- time (UTC only, AO-ABI §5.6)

int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {  // m 1..12
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

bool is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

struct Tm {
  int32_t sec, min, hour, mday, mon, year, wday, yday, isdst;
};

Tm tm_from_epoch(int64_t t) {
  int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
  int64_t rem = t - days * 86400;
  Tm tm{};
  tm.hour = static_cast<int32_t>(rem / 3600);
  tm.min = static_cast<int32_t>((rem % 3600) / 60);
  tm.sec = static_cast<int32_t>(rem % 60);
  int64_t wd = (4 + days) % 7;
  tm.wday = static_cast<int32_t>(wd < 0 ? wd + 7 : wd);
  // civil_from_days
  int64_t z = days + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t y = yoe + era * 400;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  const int64_t d = doy - (153 * mp + 2) / 5 + 1;
  const int64_t m = mp < 10 ? mp + 3 : mp - 9;
  y += m <= 2;
  tm.mday = static_cast<int32_t>(d);
  tm.mon = static_cast<int32_t>(m - 1);
  tm.year = static_cast<int32_t>(y - 1900);
  tm.yday = static_cast<int32_t>(days - days_from_civil(y, 1, 1));
  tm.isdst = 0;
  return tm;
}

Tm read_tm(const Mem& m, uint64_t p) {
  Tm tm;
  int32_t* f = &tm.sec;
  for (int k = 0; k < 9; ++k) f[k] = static_cast<int32_t>(m.u32(p + 4 * k));
  return tm;
}

void write_tm(const Mem& m, uint64_t p, const Tm& tm, bool m64, bool gmtoff) {
  const int32_t* f = &tm.sec;
  for (int k = 0; k < 9; ++k) m.w32(p + 4 * k, static_cast<uint32_t>(f[k]));
  if (gmtoff) m64 ? m.w64(p + 40, 0) : m.w32(p + 36, 0);
}

int64_t tm_to_epoch(const Tm& tm) {  // JS Date semantics: fields may overflow
  int64_t y = static_cast<int64_t>(tm.year) + 1900;
  int64_t mon = tm.mon;
  y += mon >= 0 ? mon / 12 : -((-mon + 11) / 12);
  mon -= (mon >= 0 ? mon / 12 : -((-mon + 11) / 12)) * 12;
  int64_t days = days_from_civil(y, mon + 1, 1) + (static_cast<int64_t>(tm.mday) - 1);
  return days * 86400 + static_cast<int64_t>(tm.hour) * 3600 + static_cast<int64_t>(tm.min) * 60 + tm.sec;
}

const char* const WDAY[] = {"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"};
const char* const MONTH[] = {"January", "February", "March",     "April",   "May",      "June",
                             "July",    "August",   "September", "October", "November", "December"};

std::string pad(int64_t v, int w, char c = '0') {
  std::string s = std::to_string(v < 0 ? -v : v);
  while (static_cast<int>(s.size()) < w) s.insert(s.begin(), c);
  return v < 0 ? "-" + s : s;
}

// ISO 8601 week-based year and week number.
void iso_week(const Tm& tm, int64_t& iso_year, int& week) {
  int64_t year = tm.year + 1900;
  int wday_mon = (tm.wday + 6) % 7;  // Monday = 0
  int wk = (tm.yday - wday_mon + 10) / 7;
  if (wk < 1) {
    --year;
    int days_prev = is_leap(year) ? 366 : 365;
    int yday = tm.yday + days_prev;
    wk = (yday - wday_mon + 10) / 7;
  } else {
    int days_this = is_leap(year) ? 366 : 365;
    if (wk == 53 && (tm.yday - wday_mon + 3) >= days_this) {  // Thursday of this week is next year
      ++year;
      wk = 1;
    }
  }
  iso_year = year;
  week = wk;
}

// strftime as the emscripten JS glue implements it (English names, UTC).
std::string js_strftime(std::string fmt, const Tm& tm) {
  static const char* const rules1[][2] = {
      {"%c", "%a %b %d %H:%M:%S %Y"}, {"%D", "%m/%d/%y"}, {"%F", "%Y-%m-%d"}, {"%h", "%b"},
      {"%r", "%I:%M:%S %p"}, {"%R", "%H:%M"}, {"%T", "%H:%M:%S"}, {"%x", "%m/%d/%y"}, {"%X", "%H:%M:%S"},
      {"%Ec", "%c"}, {"%EC", "%C"}, {"%Ex", "%m/%d/%y"}, {"%EX", "%H:%M:%S"}, {"%Ey", "%y"}, {"%EY", "%Y"},
      {"%Od", "%d"}, {"%Oe", "%e"}, {"%OH", "%H"}, {"%OI", "%I"}, {"%Om", "%m"}, {"%OM", "%M"},
      {"%OS", "%S"}, {"%Ou", "%u"}, {"%OU", "%U"}, {"%OV", "%V"}, {"%Ow", "%w"}, {"%OW", "%W"},
      {"%Oy", "%y"}};
  for (auto& r : rules1) {  // same order and global replace as the glue's regex pass
    std::string from = r[0], to = r[1];
    for (size_t p = fmt.find(from); p != std::string::npos; p = fmt.find(from, p + to.size()))
      fmt.replace(p, from.size(), to);
  }
  const int64_t year = static_cast<int64_t>(tm.year) + 1900;
  std::string out;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%' || i + 1 >= fmt.size()) {
      out += fmt[i];
      continue;
    }
    char c = fmt[i + 1];
    std::string v;
    bool known = true;
    int wd = ((tm.wday % 7) + 7) % 7;
    int mo = ((tm.mon % 12) + 12) % 12;
    switch (c) {
      case '%': v = "%"; break;
      case 'a': v = std::string(WDAY[wd]).substr(0, 3); break;
      case 'A': v = WDAY[wd]; break;
      case 'b': v = std::string(MONTH[mo]).substr(0, 3); break;
      case 'B': v = MONTH[mo]; break;
      case 'C': v = pad(year / 100, 2); break;
      case 'd': v = pad(tm.mday, 2); break;
      case 'e': v = pad(tm.mday, 2, ' '); break;
      case 'g': {
        int64_t iy; int w; iso_week(tm, iy, w); v = pad(iy % 100, 2); break;
      }
      case 'G': {
        int64_t iy; int w; iso_week(tm, iy, w); v = std::to_string(iy); break;
      }
      case 'H': v = pad(tm.hour, 2); break;
      case 'I': {
        int h = tm.hour;
        if (h == 0) h = 12; else if (h > 12) h -= 12;
        v = pad(h, 2);
        break;
      }
      case 'j': v = pad(tm.yday + 1, 3); break;
      case 'm': v = pad(tm.mon + 1, 2); break;
      case 'M': v = pad(tm.min, 2); break;
      case 'n': v = "\n"; break;
      case 'p': v = (tm.hour >= 0 && tm.hour < 12) ? "AM" : "PM"; break;
      case 'S': v = pad(tm.sec, 2); break;
      case 't': v = "\t"; break;
      case 'u': v = std::to_string(wd == 0 ? 7 : wd); break;
      case 'U': v = pad((tm.yday + 7 - wd) / 7, 2); break;
      case 'V': {
        int64_t iy; int w; iso_week(tm, iy, w); v = pad(w, 2); break;
      }
      case 'w': v = std::to_string(wd); break;
      case 'W': v = pad((tm.yday + 7 - (wd + 6) % 7) / 7, 2); break;
      case 'y': v = pad(year % 100, 2); break;
      case 'Y': v = std::to_string(year); break;
      case 'z': v = "+0000"; break;
      case 'Z': v = "GMT"; break;
      default: known = false;
    }
    if (known) {
      out += v;
      ++i;
    } else {
      out += '%';
    }
  }
  return out;
}

// ---------------------------------------------------------------- host functions

void h_abort(HostState*, const Args&) { throw HostTrap{"abort() called"}; }

void h_assert_fail(HostState* st, const Args& a) {
  Mem m(st);
  std::string msg = "Assertion failed: " + m.cstr(a.u(0), 4096) + ", at: " + m.cstr(a.u(1), 4096) + "," +
                    std::to_string(a.i(2)) + "," + m.cstr(a.u(3), 4096);
  throw HostTrap{msg};
}

void h_exit(HostState*, const Args& a) { throw HostTrap{"exit(" + std::to_string(a.i(0)) + ") called"}; }

void h_cxa_throw(HostState*, const Args&) {
  throw HostTrap{"__cxa_throw: C++ exceptions are disabled in this build (abort)"};
}

void h_dl(HostState*, const Args&) { throw HostTrap{"dynamic linking (dlopen) is not supported (abort)"}; }

void h_system(HostState* st, const Args& a) {
  // AO-ABI §5.7: never execute anything. NULL probes "is there a shell" -> 0 (no).
  if (a.u(0) == 0) return a.ret(0);
  if (st->family == F1 || st->family == F2) {
    // errno = ENOSYS via the module's __errno_location, then -1
    if (st->f_errno.store_id) {
      wasmtime_val_raw_t r[1];
      r[0].i64 = 0;
      wasm_trap_t* trap = nullptr;
      wasmtime_error_t* err = api->wasmtime_func_call_unchecked(st->ctx, &st->f_errno, r, 1, &trap);
      if (err) wt::take_error(err);
      if (trap) return void(a.ret(-1)), void(wt::take_trap(trap, nullptr, nullptr));
      uint64_t p = st->mem64 ? static_cast<uint64_t>(r[0].i64) : static_cast<uint32_t>(r[0].i32);
      Mem m(st);
      m.w32(p, E_NOSYS);
    }
    return a.ret(-1);
  }
  a.ret(-E_NOSYS);
}

void h_get_temp_ret0(HostState* st, const Args& a) { a.ret(st->temp_ret0); }
void h_set_temp_ret0(HostState* st, const Args& a) { st->temp_ret0 = a.i(0); }

void h_throw_longjmp(HostState* st, const Args&) {
  st->longjmp_pending = true;
  throw HostTrap{"longjmp"};
}

void h_memcpy(HostState* st, const Args& a) {
  Mem m(st);
  uint64_t dst = a.u(0), src = a.u(1), n = a.u(2);
  m.check(dst, n);
  m.check(src, n);
  std::memmove(m.base + dst, m.base + src, n);
}

bool grow_to(HostState* st, uint64_t new_size) {
  size_t old = st->mem_size();
  if (new_size <= old) return true;
  uint64_t pages = (new_size - old + 65535) >> 16;
  if (st->memory_limit >= 0 && old + pages * 65536 > static_cast<uint64_t>(st->memory_limit)) {
    st->limit_hit = true;
    return false;
  }
  uint64_t prev = 0;
  wasmtime_error_t* e = api->wasmtime_memory_grow(st->ctx, &st->memory, pages, &prev);
  if (e) {
    wt::take_error(e);
    return false;
  }
  return true;
}

void h_resize_heap(HostState* st, const Args& a) {
  // AO-ABI §5.3, in the glue's double arithmetic.
  const double old = static_cast<double>(st->mem_size());
  const double req = static_cast<double>(a.u(0));
  const double heap_max = static_cast<double>(st->heap_max);
  if (req > heap_max) return a.ret(0);
  for (int cut = 1; cut <= 4; cut *= 2) {
    double over = old * (1 + 0.2 / cut);
    over = std::min(over, req + 100663296.0);
    double ns = std::max(req, over);
    ns = std::ceil(ns / 65536.0) * 65536.0;
    ns = std::min(heap_max, ns);
    if (grow_to(st, static_cast<uint64_t>(ns))) return a.ret(1);
  }
  a.ret(0);
}

void h_get_heap_max(HostState* st, const Args& a) { a.ret(static_cast<int64_t>(st->heap_max)); }

void h_date_zero(HostState*, const Args& a) { a.retd(0.0); }
void h_date_counter(HostState* st, const Args& a) { a.retd(st->clock++); }
void h_monotonic(HostState*, const Args& a) { a.ret(1); }

void h_tzset(HostState* st, const Args& a) {
  Mem m(st);
  size_t np = a.nparams();
  m.w32(a.u(0), 0);  // timezone: seconds west of UTC
  m.w32(a.u(1), 0);  // daylight
  if (np == 3) {
    // format 2 style: tzname[2] pointers to malloc'd strings (UTC host: [0]=summer, [1]=winter name)
    uint64_t names[2] = {0, 0};
    const char* txt[2] = {"GMT", "UTC"};
    for (int k = 0; k < 2; ++k) {
      if (!st->f_malloc.store_id) break;
      wasmtime_val_raw_t r[1];
      if (st->mem64) r[0].i64 = 4; else r[0].i32 = 4;
      wasm_trap_t* trap = nullptr;
      wasmtime_error_t* err = api->wasmtime_func_call_unchecked(st->ctx, &st->f_malloc, r, 1, &trap);
      if (err) throw HostTrap{wt::take_error(err)};
      if (trap) throw HostTrap{wt::take_trap(trap, nullptr, nullptr)};
      names[k] = st->mem64 ? static_cast<uint64_t>(r[0].i64) : static_cast<uint32_t>(r[0].i32);
      Mem m2(st);
      if (names[k]) std::memcpy(m2.at(names[k], 4), txt[k], 4);
    }
    Mem m3(st);
    m3.wptr(a.u(2), names[0], st->mem64);
    m3.wptr(a.u(2) + (st->mem64 ? 8 : 4), names[1], st->mem64);
    return;
  }
  std::memcpy(m.at(a.u(2), 4), "GMT", 4);
  std::memcpy(m.at(a.u(3), 4), "UTC", 4);
}

void h_gmtime(HostState* st, const Args& a) {
  Mem m(st);
  size_t np = a.nparams();
  int64_t t;
  uint64_t tmp;
  if (np == 3) {  // (t_lo, t_hi, tm*)
    t = static_cast<int64_t>((static_cast<uint64_t>(static_cast<uint32_t>(a.i(1))) << 32) |
                             static_cast<uint32_t>(a.i(0)));
    tmp = a.u(2);
  } else if (a.t(0) == 'j' && !st->mem64) {  // (i64 time, i32 tm*)
    t = a.s(0);
    tmp = a.u(1);
  } else if (st->mem64) {  // wasm64: (i64 time, i64 tm*)
    t = a.s(0);
    tmp = a.u(1);
  } else {  // format 1/2: (time_t* (32-bit), tm*)
    t = static_cast<int32_t>(m.u32(a.u(0)));
    tmp = a.u(1);
  }
  write_tm(m, tmp, tm_from_epoch(t), st->mem64, true);
}

void h_mktime(HostState* st, const Args& a) {
  Mem m(st);
  uint64_t p = a.u(0);
  Tm tm = read_tm(m, p);
  int64_t t = tm_to_epoch(tm);
  write_tm(m, p, tm_from_epoch(t), st->mem64, false);
  a.ret(a.b->sig.back() == 'j' ? t : static_cast<int64_t>(static_cast<int32_t>(t)));
}

void h_strftime(HostState* st, const Args& a) {
  Mem m(st);
  uint64_t s = a.u(0), max = a.u(1);
  std::string fmt = m.cstr(a.u(2), 65536);
  Tm tm = read_tm(m, a.u(3));
  std::string out = js_strftime(fmt, tm);
  if (out.size() + 1 > max) return a.ret(0);
  std::memcpy(m.at(s, out.size() + 1), out.c_str(), out.size() + 1);
  a.ret(static_cast<int64_t>(out.size()));
}

void h_mmap(HostState*, const Args& a) { a.ret(-E_NOSYS); }  // file mappings not implemented
void h_munmap(HostState*, const Args& a) { a.ret(0); }

// ---- environment (AO-ABI §5.2): formats 1-3 get the 7 web_user strings, 4/wasm64 an empty environment
const std::vector<std::string>& env_strings(const HostState* st) {
  static const std::vector<std::string> seven = {"USER=web_user", "LOGNAME=web_user", "PATH=/", "PWD=/",
                                                 "HOME=/home/web_user", "LANG=C.UTF-8", "_=./this.program"};
  static const std::vector<std::string> none;
  return (st->family == F1 || st->family == F2 || st->family == F3) ? seven : none;
}

void h_environ_sizes_get(HostState* st, const Args& a) {
  Mem m(st);
  const auto& env = env_strings(st);
  uint64_t total = 0;
  for (auto& s : env) total += s.size() + 1;
  m.wptr(a.u(0), env.size(), st->mem64);
  m.wptr(a.u(1), total, st->mem64);
  a.ret(0);
}

void h_environ_get(HostState* st, const Args& a) {
  Mem m(st);
  const auto& env = env_strings(st);
  uint64_t arr = a.u(0), buf = a.u(1);
  size_t w = st->mem64 ? 8 : 4;
  for (size_t k = 0; k < env.size(); ++k) {
    m.wptr(arr + k * w, buf, st->mem64);
    std::memcpy(m.at(buf, env[k].size() + 1), env[k].c_str(), env[k].size() + 1);
    buf += env[k].size() + 1;
  }
  a.ret(0);
}

// ---- fd_* and MEMFS

int32_t fs_open(HostState* st, const std::string& path, int32_t flags) {
  MemFs& fs = st->fs;
  constexpr int32_t O_CREAT = 0100, O_EXCL = 0200, O_TRUNC = 01000, O_DIRECTORY = 0200000;
  bool writing = (flags & 3) != 0;
  auto it = fs.nodes.find(path);
  if (it == fs.nodes.end()) {
    if (!(flags & O_CREAT)) return -E_NOENT;
    if (!fs.parent_is_dir(path)) return -E_NOENT;
    fs.nodes[path] = MemFs::Node{};
  } else {
    if ((flags & O_CREAT) && (flags & O_EXCL)) return -E_EXIST;
    if (it->second.dir && writing) return -E_ISDIR;
    if (!it->second.dir && (flags & O_DIRECTORY)) return -E_NOTDIR;
    if (!it->second.dir && (flags & O_TRUNC) && writing && path.rfind("/dev/", 0) != 0) fs.resize(it->second, 0);
  }
  int32_t fd = fs.alloc_fd();
  if (fd < 0) return -E_NOSYS;
  fs.fds[fd] = MemFs::Fd{path, 0, flags};
  return fd;
}

void h_openat(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(0);  // format-1 glue stub (returns fd 0)
  Mem m(st);
  a.ret(fs_open(st, path_arg(m, a.u(1)), a.i(2)));
}

void h_fd_write(HostState* st, const Args& a) {
  Mem m(st);
  int32_t fd = a.i(0);
  uint64_t iovs = a.u(1), n = a.u(2), out = a.u(3);
  size_t isz = st->mem64 ? 16 : 8;
  uint64_t total = 0;
  MemFs::Fd* f = nullptr;
  MemFs::Node* node = nullptr;
  if (st->family != F1 && fd > 2) {
    auto it = st->fs.fds.find(fd);
    if (it == st->fs.fds.end()) return a.ret(E_BADF);
    f = &it->second;
    auto nit = st->fs.nodes.find(f->path);
    if (nit == st->fs.nodes.end() || nit->second.dir) return a.ret(E_BADF);
    if (f->path.rfind("/dev/", 0) != 0) node = &nit->second;
  }
  if (n > (1u << 20)) return a.ret(E_INVAL);
  for (uint64_t k = 0; k < n; ++k) {
    uint64_t p = m.rptr(iovs + k * isz, st->mem64);
    uint64_t len = m.rptr(iovs + k * isz + isz / 2, st->mem64);
    m.check(p, len);
    if (node) {
      constexpr int32_t O_APPEND = 02000;
      if (f->flags & O_APPEND) f->pos = node->data.size();
      if (node->data.size() < f->pos + len && !st->fs.resize(*node, f->pos + len)) {
        m.wptr(out, total, st->mem64);
        return a.ret(total ? 0 : 51);  // ENOSPC: MEMFS is capped (host memory)
      }
      std::memcpy(&node->data[f->pos], m.base + p, len);
      f->pos += len;
    }
    total += len;  // stdout/stderr/devices: consumed and discarded (the loader mutes console during handle)
  }
  m.wptr(out, total, st->mem64);
  a.ret(0);
}

void h_fd_read(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(E_NOSYS);
  Mem m(st);
  int32_t fd = a.i(0);
  uint64_t iovs = a.u(1), n = a.u(2), out = a.u(3);
  size_t isz = st->mem64 ? 16 : 8;
  uint64_t total = 0;
  if (fd >= 0 && fd <= 2) {  // no stdin: EOF
    m.wptr(out, 0, st->mem64);
    return a.ret(0);
  }
  auto it = st->fs.fds.find(fd);
  if (it == st->fs.fds.end()) return a.ret(E_BADF);
  MemFs::Fd& f = it->second;
  auto nit = st->fs.nodes.find(f.path);
  if (nit == st->fs.nodes.end()) return a.ret(E_BADF);
  if (nit->second.dir) return a.ret(E_ISDIR);
  bool random = f.path == "/dev/urandom" || f.path == "/dev/random";
  bool null = f.path == "/dev/null" || f.path == "/dev/tty";
  if (n > (1u << 20)) return a.ret(E_INVAL);
  for (uint64_t k = 0; k < n; ++k) {
    uint64_t p = m.rptr(iovs + k * isz, st->mem64);
    uint64_t len = m.rptr(iovs + k * isz + isz / 2, st->mem64);
    m.check(p, len);
    if (null) break;
    if (random) {
      write_urandom(st, m.base + p, len);
      total += len;
      continue;
    }
    const std::string& d = nit->second.data;
    if (f.pos >= d.size()) break;
    uint64_t k2 = std::min<uint64_t>(len, d.size() - f.pos);
    std::memcpy(m.base + p, d.data() + f.pos, k2);
    f.pos += k2;
    total += k2;
    if (k2 < len) break;
  }
  m.wptr(out, total, st->mem64);
  a.ret(0);
}

void h_fd_close(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(E_NOSYS);
  int32_t fd = a.i(0);
  if (fd >= 0 && fd <= 2) return a.ret(0);
  a.ret(st->fs.fds.erase(fd) ? 0 : E_BADF);
}

void h_fd_seek(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(E_SPIPE);
  Mem m(st);
  int32_t fd = a.i(0);
  int64_t off;
  int32_t whence;
  uint64_t out;
  if (a.nparams() == 5) {  // (fd, off_lo, off_hi, whence, newoff*)
    off = static_cast<int64_t>((static_cast<uint64_t>(static_cast<uint32_t>(a.i(2))) << 32) |
                               static_cast<uint32_t>(a.i(1)));
    whence = a.i(3);
    out = a.u(4);
  } else {
    off = a.s(1);
    whence = a.i(2);
    out = a.u(3);
  }
  if (fd >= 0 && fd <= 2) return a.ret(E_SPIPE);
  auto it = st->fs.fds.find(fd);
  if (it == st->fs.fds.end()) return a.ret(E_BADF);
  auto nit = st->fs.nodes.find(it->second.path);
  if (nit == st->fs.nodes.end()) return a.ret(E_BADF);
  int64_t base = whence == 0 ? 0 : whence == 1 ? static_cast<int64_t>(it->second.pos)
                                  : whence == 2 ? static_cast<int64_t>(nit->second.data.size()) : -1;
  if (base < 0 || base + off < 0) return a.ret(E_INVAL);
  it->second.pos = static_cast<uint64_t>(base + off);
  m.w64(out, it->second.pos);
  a.ret(0);
}

void h_fd_sync(HostState*, const Args& a) { a.ret(0); }

void h_fd_fdstat_get(HostState* st, const Args& a) {
  Mem m(st);
  int32_t fd = a.i(0);
  uint8_t type = 4;
  if (fd >= 0 && fd <= 2) {
    type = 2;
  } else {
    auto it = st->fs.fds.find(fd);
    if (it == st->fs.fds.end()) return a.ret(E_BADF);
    if (st->fs.is_dir(it->second.path)) type = 3;
  }
  uint64_t p = a.u(1);
  std::memset(m.at(p, 24), 0, 24);
  m.at(p, 1)[0] = type;
  a.ret(0);
}

void write_stat(HostState* st, const Mem& m, uint64_t buf, bool dir, uint64_t size, bool chr) {
  // emscripten 3.1 doStat layout (wasm32); wasm64 writes mode and size only (see engine docs)
  uint32_t mode = dir ? 040777 : chr ? 020666 : 0100666;
  if (!st->mem64) {
    std::memset(m.at(buf, 96), 0, 96);
    m.w32(buf + 4, mode);
    m.w32(buf + 8, 1);
    m.w64(buf + 24, size);
    m.w32(buf + 32, 4096);
    m.w32(buf + 36, static_cast<uint32_t>((size + 511) / 512));
  } else {
    m.w32(buf + 4, mode);
    m.w64(buf + 32, size);
  }
}

int32_t stat_path(HostState* st, const Mem& m, const std::string& path, uint64_t buf) {
  auto it = st->fs.nodes.find(path);
  if (it == st->fs.nodes.end()) return -E_NOENT;
  write_stat(st, m, buf, it->second.dir, it->second.data.size(), path.rfind("/dev/", 0) == 0);
  return 0;
}

void h_stat64(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(0);
  Mem m(st);
  a.ret(stat_path(st, m, path_arg(m, a.u(0)), a.u(1)));
}

void h_fstat64(HostState* st, const Args& a) {
  Mem m(st);
  int32_t fd = a.i(0);
  if (fd >= 0 && fd <= 2) {
    write_stat(st, m, a.u(1), false, 0, true);
    return a.ret(0);
  }
  auto it = st->fs.fds.find(fd);
  if (it == st->fs.fds.end()) return a.ret(-E_BADF);
  a.ret(stat_path(st, m, it->second.path, a.u(1)));
}

void h_newfstatat(HostState* st, const Args& a) {
  Mem m(st);
  a.ret(stat_path(st, m, path_arg(m, a.u(1)), a.u(2)));
}

void h_faccessat(HostState* st, const Args& a) {
  Mem m(st);
  a.ret(st->fs.exists(path_arg(m, a.u(1))) ? 0 : -E_NOENT);
}

void h_ok_path0(HostState* st, const Args& a) {  // chmod: path must exist
  Mem m(st);
  a.ret(st->fs.exists(path_arg(m, a.u(0))) ? 0 : -E_NOENT);
}

void h_ok_path1(HostState* st, const Args& a) {  // utimensat(dirfd, path, ...)
  Mem m(st);
  a.ret(st->fs.exists(path_arg(m, a.u(1))) ? 0 : -E_NOENT);
}

void h_zero(HostState*, const Args& a) { a.ret(0); }

void h_fcntl(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(0);
  int32_t fd = a.i(0), cmd = a.i(1);
  bool known = (fd >= 0 && fd <= 2) || st->fs.fds.count(fd);
  if (!known) return a.ret(-E_BADF);
  switch (cmd) {
    case 0: {  // F_DUPFD
      int32_t min = 0;
      Mem m(st);
      // the varargs pointer holds the minimum fd
      min = static_cast<int32_t>(m.u32(a.u(2)));
      if (fd <= 2) return a.ret(-E_INVAL);
      int32_t nfd = st->fs.alloc_fd(std::max(min, 3));
      st->fs.fds[nfd] = st->fs.fds[fd];
      return a.ret(nfd);
    }
    case 1: case 2: case 4: case 12: case 13: case 14: return a.ret(0);
    case 3: return a.ret(fd <= 2 ? 2 : st->fs.fds[fd].flags);
    default: return a.ret(-E_INVAL);
  }
}

void h_ioctl(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(0);
  int32_t fd = a.i(0);
  if (fd >= 0 && fd <= 2) return a.ret(0);  // tty
  a.ret(st->fs.fds.count(fd) ? -E_NOTTY : -E_BADF);
}

void h_dup3(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(0);
  int32_t fd = a.i(0), nfd = a.i(1);
  if (fd == nfd || nfd < 0 || nfd > 4096) return a.ret(-E_INVAL);
  if (fd <= 2 && fd >= 0) return a.ret(-E_INVAL);
  auto it = st->fs.fds.find(fd);
  if (it == st->fs.fds.end()) return a.ret(-E_BADF);
  st->fs.fds[nfd] = it->second;
  a.ret(nfd);
}

int32_t fs_rmdir(HostState* st, const std::string& p) {
  auto it = st->fs.nodes.find(p);
  if (it == st->fs.nodes.end()) return -E_NOENT;
  if (!it->second.dir) return -E_NOTDIR;
  if (p == "/") return -E_INVAL;
  auto next = std::next(it);
  if (next != st->fs.nodes.end() && next->first.rfind(p + "/", 0) == 0) return -E_NOTEMPTY;
  st->fs.nodes.erase(it);
  return 0;
}

void h_unlinkat(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(0);
  Mem m(st);
  std::string p = path_arg(m, a.u(1));
  if (a.i(2) & 0x200) return a.ret(fs_rmdir(st, p));  // AT_REMOVEDIR
  auto it = st->fs.nodes.find(p);
  if (it == st->fs.nodes.end()) return a.ret(-E_NOENT);
  if (it->second.dir) return a.ret(-E_ISDIR);
  st->fs.bytes -= it->second.data.size();
  st->fs.nodes.erase(it);
  a.ret(0);
}

void h_rmdir(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(0);
  Mem m(st);
  a.ret(fs_rmdir(st, path_arg(m, a.u(0))));
}

void h_renameat(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(0);
  Mem m(st);
  std::string from = path_arg(m, a.u(1)), to = path_arg(m, a.u(3));
  auto it = st->fs.nodes.find(from);
  if (it == st->fs.nodes.end()) return a.ret(-E_NOENT);
  if (!st->fs.parent_is_dir(to)) return a.ret(-E_NOENT);
  if (from == to) return a.ret(0);
  if (to.rfind(from + "/", 0) == 0) return a.ret(-E_INVAL);
  std::vector<std::pair<std::string, MemFs::Node>> moved;
  for (auto i = st->fs.nodes.begin(); i != st->fs.nodes.end();) {
    if (i->first == from || i->first.rfind(from + "/", 0) == 0) {
      moved.emplace_back(to + i->first.substr(from.size()), std::move(i->second));
      i = st->fs.nodes.erase(i);
    } else {
      ++i;
    }
  }
  for (auto& kv : moved) {
    auto old = st->fs.nodes.find(kv.first);
    if (old != st->fs.nodes.end()) st->fs.bytes -= old->second.data.size();
    st->fs.nodes[kv.first] = std::move(kv.second);
  }
  for (auto& kv : st->fs.fds)
    if (kv.second.path == from || kv.second.path.rfind(from + "/", 0) == 0)
      kv.second.path = to + kv.second.path.substr(from.size());
  a.ret(0);
}

void h_mkdirat(HostState* st, const Args& a) {
  Mem m(st);
  std::string p = path_arg(m, a.u(1));
  if (st->fs.exists(p)) return a.ret(-E_EXIST);
  if (!st->fs.parent_is_dir(p)) return a.ret(-E_NOENT);
  st->fs.nodes[p] = MemFs::Node{true, {}};
  a.ret(0);
}

void h_readlinkat(HostState* st, const Args& a) {
  Mem m(st);
  a.ret(st->fs.exists(path_arg(m, a.u(1))) ? -E_INVAL : -E_NOENT);
}

void h_getcwd(HostState* st, const Args& a) {
  Mem m(st);
  if (a.u(1) < 2) return a.ret(-E_RANGE);
  std::memcpy(m.at(a.u(0), 2), "/", 2);
  a.ret(2);
}

void h_ftruncate(HostState* st, const Args& a) {
  int64_t len = a.nparams() == 3 ? static_cast<int64_t>((static_cast<uint64_t>(static_cast<uint32_t>(a.i(2))) << 32) |
                                                        static_cast<uint32_t>(a.i(1)))
                                 : a.s(1);
  auto it = st->fs.fds.find(a.i(0));
  if (it == st->fs.fds.end()) return a.ret(-E_BADF);
  if (len < 0 || len > (int64_t(1) << 30)) return a.ret(-E_INVAL);
  auto nit = st->fs.nodes.find(it->second.path);
  if (nit == st->fs.nodes.end() || nit->second.dir) return a.ret(-E_INVAL);
  a.ret(st->fs.resize(nit->second, static_cast<uint64_t>(len)) ? 0 : -51);
}

void h_proc_exit(HostState*, const Args& a) { throw HostTrap{"proc_exit(" + std::to_string(a.i(0)) + ") called"}; }

void h_clock_time_get(HostState*, const Args& a) { a.ret(1); }  // as HyperBEAM: errno 1, nothing written

void h_emscripten_err(HostState*, const Args&) {}  // stderr: discarded

// WeaveDrive (AO-ABI §5.9): no WeaveDrive configured in this engine -> NULL FILE / nothing read.
void h_wd_zero(HostState*, const Args& a) { a.ret(0); }

void h_usegas(HostState* st, const Args& a) {
  int64_t n = a.s(0);
  st->gas_used += static_cast<uint64_t>(n < 0 ? 0 : n);
  if (st->gas_used > st->gas_limit) throw HostTrap{"out of gas!"};
}

void h_gas_used(HostState* st, const Args& a) { a.ret(static_cast<int32_t>(static_cast<uint32_t>(st->gas_used))); }

// ---- invoke_* (AO-ABI §5.4)
void h_invoke(HostState* st, const Args& a) {
  const std::string& sig = a.b->sig;
  size_t np = a.nparams();
  if (!st->has_table) throw HostTrap{"invoke_*: module exports no function table"};
  // save the stack pointer
  wasmtime_val_raw_t sp[1];
  sp[0].i64 = 0;
  bool have_sp = st->f_stack_save.store_id && st->f_stack_restore.store_id;
  if (have_sp) {
    wasm_trap_t* trap = nullptr;
    wasmtime_error_t* e = api->wasmtime_func_call_unchecked(st->ctx, &st->f_stack_save, sp, 1, &trap);
    if (e) throw HostTrap{wt::take_error(e)};
    if (trap) throw HostTrap{wt::take_trap(trap, nullptr, nullptr)};
  }
  uint64_t idx = a.u(0);
  wasmtime_val_t fv;
  std::memset(&fv, 0, sizeof fv);
  if (!api->wasmtime_table_get(st->ctx, &st->table, idx, &fv) || fv.kind != wt::WASMTIME_FUNCREF)
    throw HostTrap{"invoke_*: table index out of bounds"};
  if (fv.of.funcref.store_id == 0) throw HostTrap{"invoke_*: call to null table entry"};
  wasmtime_val_t args[32];
  wasmtime_val_t results[1];
  size_t nargs = np - 1;
  if (nargs > 32) throw HostTrap{"invoke_*: too many arguments"};
  for (size_t k = 1; k < np; ++k) {
    wasmtime_val_t& v = args[k - 1];
    std::memset(&v, 0, sizeof v);
    switch (sig[k]) {
      case 'i': v.kind = wt::WASMTIME_I32; v.of.i32 = a.a[k].i32; break;
      case 'j': v.kind = wt::WASMTIME_I64; v.of.i64 = a.a[k].i64; break;
      case 'f': v.kind = wt::WASMTIME_F32; v.of.f32 = a.a[k].f32; break;
      case 'd': v.kind = wt::WASMTIME_F64; v.of.f64 = a.a[k].f64; break;
      default: throw HostTrap{"invoke_*: unsupported argument type"};
    }
  }
  size_t nres = sig.size() - np - 1;
  std::memset(results, 0, sizeof results);
  wasm_trap_t* trap = nullptr;
  // checked call: wasmtime verifies the table entry's type against the invoke signature
  wasmtime_error_t* e = api->wasmtime_func_call(st->ctx, &fv.of.funcref, args, nargs, results, nres, &trap);
  // A trap raised by a host function (e.g. the longjmp sentinel) comes back as an error, a wasm trap as `trap`.
  if (!trap && !e) {
    if (nres == 1) {
      switch (sig.back()) {
        case 'i': a.a[0].i64 = 0; a.a[0].i32 = results[0].of.i32; break;
        case 'j': a.a[0].i64 = results[0].of.i64; break;
        case 'f': a.a[0].i64 = 0; a.a[0].f32 = results[0].of.f32; break;
        case 'd': a.a[0].f64 = results[0].of.f64; break;
      }
    }
    return;
  }
  // something unwound: restore the stack pointer first
  if (have_sp) {
    wasm_trap_t* t2 = nullptr;
    wasmtime_error_t* e2 = api->wasmtime_func_call_unchecked(st->ctx, &st->f_stack_restore, sp, 1, &t2);
    if (e2) wt::take_error(e2);
    if (t2) wt::take_trap(t2, nullptr, nullptr);
  }
  if (!st->longjmp_pending) {
    // not a longjmp: re-raise (keeps the original trap message; host reasons survive in trap_reason)
    wasmtime_trap_code_t code = 0;
    bool has_code = false;
    std::string msg = trap ? wt::take_trap(trap, &code, &has_code) : wt::take_error(e);
    if (trap && e) wt::take_error(e);
    if (has_code && code == wt::TRAP_OUT_OF_FUEL) throw HostTrap{"out of gas!"};
    if (has_code && code == wt::TRAP_INTERRUPT) throw HostTrap{"wasm execution interrupted (wall-clock limit)"};
    if (!st->trap_reason.empty()) throw HostTrap{st->trap_reason};
    throw HostTrap{clean_message(msg)};
  }
  if (trap) wt::take_trap(trap, nullptr, nullptr);
  if (e) wt::take_error(e);
  st->longjmp_pending = false;
  st->trap_reason.clear();
  if (!st->f_set_threw.store_id) throw HostTrap{"invoke_*: longjmp without setThrew export"};
  wasmtime_val_raw_t tr[2];
  if (st->mem64) tr[0].i64 = 1; else { tr[0].i64 = 0; tr[0].i32 = 1; }
  tr[1].i64 = 0;
  wasm_trap_t* t3 = nullptr;
  wasmtime_error_t* e3 = api->wasmtime_func_call_unchecked(st->ctx, &st->f_set_threw, tr, 2, &t3);
  if (e3) throw HostTrap{wt::take_error(e3)};
  if (t3) throw HostTrap{wt::take_trap(t3, nullptr, nullptr)};
  if (nres == 1) a.a[0].i64 = 0;
}

// ---------------------------------------------------------------- registry

struct Entry {
  const char* name;
  Impl impl;
  std::vector<const char*> sigs;
};

const std::vector<Entry>& registry() {
  static const std::vector<Entry> r = {
      {"fd_write", h_fd_write, {"iiii:i", "ijjj:i"}},
      {"fd_read", h_fd_read, {"iiii:i", "ijjj:i"}},
      {"fd_close", h_fd_close, {"i:i"}},
      {"fd_seek", h_fd_seek, {"iiiii:i", "ijij:i", "ijii:i"}},
      {"fd_sync", h_fd_sync, {"i:i"}},
      {"fd_fdstat_get", h_fd_fdstat_get, {"ii:i", "ij:i"}},
      {"environ_get", h_environ_get, {"ii:i", "jj:i"}},
      {"environ_sizes_get", h_environ_sizes_get, {"ii:i", "jj:i"}},
      {"proc_exit", h_proc_exit, {"i:"}},
      {"clock_time_get", h_clock_time_get, {"iji:i", "ijj:i"}},
      {"abort", h_abort, {":"}},
      {"_abort_js", h_abort, {":"}},
      {"__assert_fail", h_assert_fail, {"iiii:", "jjij:"}},
      {"exit", h_exit, {"i:"}},
      {"system", h_system, {"i:i"}},
      {"_emscripten_system", h_system, {"i:i", "j:i"}},
      {"getTempRet0", h_get_temp_ret0, {":i"}},
      {"setTempRet0", h_set_temp_ret0, {"i:"}},
      {"_emscripten_throw_longjmp", h_throw_longjmp, {":"}},
      {"__cxa_throw", h_cxa_throw, {"iii:", "jjj:"}},
      {"emscripten_memcpy_big", h_memcpy, {"iii:", "jjj:"}},
      {"emscripten_memcpy_js", h_memcpy, {"iii:", "jjj:"}},
      {"_emscripten_memcpy_js", h_memcpy, {"iii:", "jjj:"}},
      {"emscripten_resize_heap", h_resize_heap, {"i:i", "j:i"}},
      {"emscripten_get_heap_max", h_get_heap_max, {":i", ":j"}},
      {"_emscripten_date_now", h_date_zero, {":d"}},
      {"emscripten_date_now", h_date_counter, {":d"}},
      {"emscripten_get_now", h_date_counter, {":d"}},
      {"_emscripten_get_now_is_monotonic", h_monotonic, {":i"}},
      {"_tzset_js", h_tzset, {"iii:", "iiii:", "jjjj:"}},
      {"_localtime_js", h_gmtime, {"ii:", "iii:", "jj:", "ji:"}},
      {"_gmtime_js", h_gmtime, {"ii:", "iii:", "jj:", "ji:"}},
      {"_mktime_js", h_mktime, {"i:i", "j:j", "i:j"}},
      {"strftime", h_strftime, {"iiii:i", "jjjj:j"}},
      {"strftime_l", h_strftime, {"iiiii:i", "jjjjj:j"}},
      {"_mmap_js", h_mmap, {"iiiiii:i", "iiiiiiii:i", "iiiiiii:i", "jiiijjj:i"}},
      {"_munmap_js", h_munmap, {"iiiiii:i", "iiiiiii:i", "jjiiij:i"}},
      {"_dlopen_js", h_dl, {"i:i", "j:j"}},
      {"_dlsym_js", h_dl, {"ii:i", "jj:j"}},
      {"_dlinit", h_dl, {"i:", "j:"}},
      {"__syscall_openat", h_openat, {"iiii:i", "ijij:i"}},
      {"__syscall_fcntl64", h_fcntl, {"iii:i", "iij:i"}},
      {"__syscall_ioctl", h_ioctl, {"iii:i", "iij:i"}},
      {"__syscall_dup3", h_dup3, {"iii:i"}},
      {"__syscall_unlinkat", h_unlinkat, {"iii:i", "iji:i"}},
      {"__syscall_rmdir", h_rmdir, {"i:i", "j:i"}},
      {"__syscall_renameat", h_renameat, {"iiii:i", "ijij:i"}},
      {"__syscall_readlinkat", h_readlinkat, {"iiii:i", "ijjj:i"}},
      {"__syscall_lstat64", h_stat64, {"ii:i", "jj:i"}},
      {"__syscall_stat64", h_stat64, {"ii:i", "jj:i"}},
      {"__syscall_fstat64", h_fstat64, {"ii:i", "ij:i"}},
      {"__syscall_newfstatat", h_newfstatat, {"iiii:i", "ijji:i"}},
      {"__syscall_faccessat", h_faccessat, {"iiii:i", "ijii:i"}},
      {"__syscall_chmod", h_ok_path0, {"ii:i", "ji:i"}},
      {"__syscall_fchmod", h_zero, {"ii:i"}},
      {"__syscall_fchown32", h_zero, {"iii:i"}},
      {"__syscall_getcwd", h_getcwd, {"ii:i", "jj:i"}},
      {"__syscall_mkdirat", h_mkdirat, {"iii:i", "iji:i"}},
      {"__syscall_utimensat", h_ok_path1, {"iiii:i", "ijji:i"}},
      {"__syscall_ftruncate64", h_ftruncate, {"iii:i", "ij:i"}},
      {"__asyncjs__weavedrive_open", h_wd_zero, {"ii:i", "jj:i"}},
      {"__asyncjs__weavedrive_read", h_wd_zero, {"iii:i", "ijj:i"}},
      {"__asyncjs__weavedrive_close", h_wd_zero, {"i:i"}},
      {"metering_gasUsed", h_gas_used, {":i"}},
      {"emscripten_err", h_emscripten_err, {"i:", "j:"}},
  };
  return r;
}

// Format 1 minified import letters (AO-ABI §3.1).
const char* f1_name(const std::string& letter) {
  static const std::map<std::string, const char*> m = {
      {"a", "_emscripten_date_now"}, {"b", "setTempRet0"}, {"c", "fd_close"}, {"d", "__syscall_fcntl64"},
      {"e", "__syscall_unlinkat"}, {"f", "fd_write"}, {"g", "__syscall_openat"}, {"h", "getTempRet0"},
      {"i", "_mktime_js"}, {"j", "_tzset_js"}, {"k", "emscripten_memcpy_big"}, {"l", "exit"}, {"m", "system"},
      {"n", "strftime"}, {"o", "fd_seek"}, {"p", "_emscripten_throw_longjmp"}, {"q", "emscripten_resize_heap"},
      {"r", "__syscall_lstat64"}, {"s", "__syscall_renameat"}, {"t", "__syscall_rmdir"}, {"u", "environ_get"},
      {"v", "environ_sizes_get"}, {"w", "__syscall_dup3"}, {"x", "invoke_vii"}, {"y", "fd_read"},
      {"z", "__syscall_ioctl"}, {"A", "_emscripten_get_now_is_monotonic"}, {"B", "_gmtime_js"},
      {"C", "_localtime_js"}, {"D", "abort"}};
  auto it = m.find(letter);
  return it == m.end() ? nullptr : it->second;
}

template <Impl F>
wasm_trap_t* trampoline(void* env, wasmtime_caller_t*, wasmtime_val_raw_t* a, size_t) noexcept {
  Bound* b = static_cast<Bound*>(env);
  try {
    F(b->st, Args{a, b});
    return nullptr;
  } catch (const HostTrap& t) {
    // remember the reason so a trap that unwinds through invoke_* keeps its message
    if (t.msg != "longjmp") b->st->trap_reason = t.msg;
    return make_trap(t.msg);
  } catch (const std::exception& e) {
    b->st->trap_reason = std::string("host error in ") + b->name + ": " + e.what();
    return make_trap(b->st->trap_reason);
  } catch (...) {
    b->st->trap_reason = std::string("host error in ") + b->name;
    return make_trap(b->st->trap_reason);
  }
}

// One trampoline per implementation, generated at compile time.
struct ImplCb {
  Impl impl;
  wasmtime_func_unchecked_callback_t cb;
};
#define AOCU_CB(f) ImplCb{f, trampoline<f>}
const ImplCb kCallbacks[] = {
    AOCU_CB(h_fd_write), AOCU_CB(h_fd_read), AOCU_CB(h_fd_close), AOCU_CB(h_fd_seek), AOCU_CB(h_fd_sync),
    AOCU_CB(h_fd_fdstat_get), AOCU_CB(h_environ_get), AOCU_CB(h_environ_sizes_get), AOCU_CB(h_proc_exit),
    AOCU_CB(h_clock_time_get), AOCU_CB(h_abort), AOCU_CB(h_assert_fail), AOCU_CB(h_exit), AOCU_CB(h_system),
    AOCU_CB(h_get_temp_ret0), AOCU_CB(h_set_temp_ret0), AOCU_CB(h_throw_longjmp), AOCU_CB(h_cxa_throw),
    AOCU_CB(h_memcpy), AOCU_CB(h_resize_heap), AOCU_CB(h_get_heap_max), AOCU_CB(h_date_zero),
    AOCU_CB(h_date_counter), AOCU_CB(h_monotonic), AOCU_CB(h_tzset), AOCU_CB(h_gmtime), AOCU_CB(h_mktime),
    AOCU_CB(h_strftime), AOCU_CB(h_mmap), AOCU_CB(h_munmap), AOCU_CB(h_dl), AOCU_CB(h_openat),
    AOCU_CB(h_fcntl), AOCU_CB(h_ioctl), AOCU_CB(h_dup3), AOCU_CB(h_unlinkat), AOCU_CB(h_rmdir),
    AOCU_CB(h_renameat), AOCU_CB(h_readlinkat), AOCU_CB(h_stat64), AOCU_CB(h_fstat64), AOCU_CB(h_newfstatat),
    AOCU_CB(h_faccessat), AOCU_CB(h_ok_path0), AOCU_CB(h_zero), AOCU_CB(h_getcwd), AOCU_CB(h_mkdirat),
    AOCU_CB(h_ok_path1), AOCU_CB(h_ftruncate), AOCU_CB(h_wd_zero), AOCU_CB(h_gas_used),
    AOCU_CB(h_emscripten_err), AOCU_CB(h_usegas), AOCU_CB(h_invoke)};
#undef AOCU_CB

wasmtime_func_unchecked_callback_t cb_for(Impl f) {
  for (auto& c : kCallbacks)
    if (c.impl == f) return c.cb;
  return nullptr;
}

}  // namespace

// ---------------------------------------------------------------- MemFs

void MemFs::init(bool with_data_dir) {
  nodes.clear();
  fds.clear();
  bytes = 0;
  for (const char* d : {"/", "/tmp", "/home", "/home/web_user", "/dev", "/dev/shm"}) nodes[d] = Node{true, {}};
  for (const char* f : {"/dev/null", "/dev/tty", "/dev/random", "/dev/urandom"}) nodes[f] = Node{};
  if (with_data_dir) nodes["/data"] = Node{true, {}};
}

std::string MemFs::normalise(const std::string& in) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= in.size()) {
    size_t j = in.find('/', i);
    if (j == std::string::npos) j = in.size();
    std::string seg = in.substr(i, j - i);
    if (seg == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!seg.empty() && seg != ".") {
      parts.push_back(seg);
    }
    i = j + 1;
  }
  std::string out;
  for (auto& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;  // relative paths resolve against cwd "/"
}

bool MemFs::resize(Node& n, uint64_t size) {
  uint64_t cur = n.data.size();
  if (size > cur && bytes + (size - cur) > kMaxBytes) return false;
  n.data.resize(static_cast<size_t>(size));
  bytes = bytes - cur + size;
  return true;
}

bool MemFs::is_dir(const std::string& p) const {
  auto it = nodes.find(p);
  return it != nodes.end() && it->second.dir;
}

bool MemFs::parent_is_dir(const std::string& p) const {
  size_t k = p.rfind('/');
  return is_dir(k == 0 ? "/" : p.substr(0, k));
}

int32_t MemFs::alloc_fd(int32_t min_fd) const {
  for (int32_t fd = min_fd; fd < 4096; ++fd)
    if (!fds.count(fd)) return fd;
  return -1;
}

// ---------------------------------------------------------------- serialisation of persistent host state

namespace {
void put_u64(std::string& o, uint64_t v) { o.append(reinterpret_cast<const char*>(&v), 8); }
void put_str(std::string& o, const std::string& s) {
  put_u64(o, s.size());
  o += s;
}
struct Reader {
  const std::string& s;
  size_t p = 0;
  uint64_t u64() {
    if (s.size() - p < 8) throw std::runtime_error("host state truncated");
    uint64_t v;
    std::memcpy(&v, s.data() + p, 8);
    p += 8;
    return v;
  }
  std::string str() {
    uint64_t n = u64();
    if (s.size() - p < n) throw std::runtime_error("host state truncated");
    std::string r = s.substr(p, n);
    p += n;
    return r;
  }
};
constexpr uint64_t kHostStateVersion = 1;
}  // namespace

std::string HostState::serialize() const {
  std::string o;
  put_u64(o, kHostStateVersion);
  put_u64(o, static_cast<uint32_t>(temp_ret0));
  uint64_t c;
  std::memcpy(&c, &clock, 8);
  put_u64(o, c);
  put_u64(o, urandom_ctr);
  put_str(o, urandom_key);
  put_u64(o, fs.nodes.size());
  for (auto& kv : fs.nodes) {
    put_str(o, kv.first);
    put_u64(o, kv.second.dir ? 1 : 0);
    put_str(o, kv.second.data);
  }
  put_u64(o, fs.fds.size());
  for (auto& kv : fs.fds) {
    put_u64(o, static_cast<uint32_t>(kv.first));
    put_str(o, kv.second.path);
    put_u64(o, kv.second.pos);
    put_u64(o, static_cast<uint32_t>(kv.second.flags));
  }
  return o;
}

void HostState::deserialize(const std::string& s) {
  Reader r{s};
  if (r.u64() != kHostStateVersion) throw std::runtime_error("unsupported host state version");
  temp_ret0 = static_cast<int32_t>(r.u64());
  uint64_t c = r.u64();
  std::memcpy(&clock, &c, 8);
  urandom_ctr = r.u64();
  urandom_key = r.str();
  MemFs nfs;
  uint64_t nn = r.u64();
  if (nn > (1u << 20)) throw std::runtime_error("host state: too many files");
  for (uint64_t k = 0; k < nn; ++k) {
    std::string path = r.str();
    bool dir = r.u64() != 0;
    nfs.nodes[path] = MemFs::Node{dir, r.str()};
    nfs.bytes += nfs.nodes[path].data.size();
    if (nfs.bytes > MemFs::kMaxBytes) throw std::runtime_error("host state: files exceed the MEMFS cap");
  }
  uint64_t nf = r.u64();
  if (nf > 4096) throw std::runtime_error("host state: too many fds");
  for (uint64_t k = 0; k < nf; ++k) {
    int32_t fd = static_cast<int32_t>(r.u64());
    MemFs::Fd f;
    f.path = r.str();
    f.pos = r.u64();
    f.flags = static_cast<int32_t>(r.u64());
    nfs.fds[fd] = f;
  }
  if (r.p != s.size()) throw std::runtime_error("host state has trailing bytes");
  fs = std::move(nfs);
}

// ---------------------------------------------------------------- resolution

static bool parse_invoke(const std::string& name, const std::string& declared, bool& ok) {
  // invoke_<ret><params...>: declared = idx-type + params ':' ret (v = none)
  ok = false;
  if (name.rfind("invoke_", 0) != 0) return false;
  std::string s = name.substr(7);
  if (s.empty()) return true;
  for (char c : s)
    if (!std::strchr("vijfd", c)) return true;
  std::string params = s.substr(1);
  if (params.find('v') != std::string::npos) return true;
  std::string res = s[0] == 'v' ? "" : std::string(1, s[0]);
  ok = declared == "i" + params + ":" + res || declared == "j" + params + ":" + res;
  return true;
}

wasmtime_func_unchecked_callback_t resolve_import(Family fam, const std::string& module, const std::string& name,
                                                  const std::string& sig, std::string& real_name, int& variant,
                                                  std::string& why) {
  variant = 0;
  real_name = name;
  if (module == "metering" && name == "usegas") {
    if (sig == "i:" || sig == "j:") return cb_for(h_usegas);
    why = "metering.usegas must be (i32)->() or (i64)->()";
    return nullptr;
  }
  if (fam == F1) {
    if (module != "a") {
      why = "format wasm32-unknown-emscripten imports only namespace 'a' and metering.usegas";
      return nullptr;
    }
    const char* n = f1_name(name);
    if (!n) {
      why = "unknown minified import";
      return nullptr;
    }
    real_name = n;
  } else if (module != "env" && module != "wasi_snapshot_preview1") {
    why = "unknown import namespace";
    return nullptr;
  }
  bool inv_ok = false;
  if (parse_invoke(real_name, sig, inv_ok)) {
    if (!inv_ok) {
      why = "invoke_* signature does not match its name";
      return nullptr;
    }
    return cb_for(h_invoke);
  }
  for (const Entry& e : registry()) {
    if (real_name != e.name) continue;
    for (size_t k = 0; k < e.sigs.size(); ++k) {
      if (sig == e.sigs[k]) {
        variant = static_cast<int>(k);
        return cb_for(e.impl);
      }
    }
    why = "unsupported signature " + sig + " (supported:";
    for (auto s : e.sigs) why += std::string(" ") + s;
    why += ")";
    return nullptr;
  }
  why = "not provided by the AO host ABI";
  return nullptr;
}

}  // namespace aocu::engine
