// Time host functions (UTC only; see docs/ABI.md, host imports): the counter clock, WASI clock_time_get,
// _tzset_js, _gmtime_js/_localtime_js, _mktime_js and strftime as the emscripten JS glue computes them.
// Split out of host.cpp: the calendar arithmetic and strftime port are self-contained.
#include <cstring>
#include <string>

#include "engine/host_internal.h"

namespace aocu::engine::hostfn {

using wt::api;

namespace {

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

}  // namespace

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

void h_clock_time_get(HostState*, const Args& a) { a.ret(1); }  // as HyperBEAM: errno 1, nothing written

}  // namespace aocu::engine::hostfn
