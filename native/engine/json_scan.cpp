// Minimal strict JSON scanner (RFC 8259 grammar; depth-limited) for the handle() envelope.
#include "engine/json_scan.h"

#include <cstring>

namespace aocu::engine {

namespace {

struct Scanner {
  Scanner(const char* s_, size_t n_) : s(s_), n(n_) {}
  const char* s;
  size_t n;
  size_t i = 0;
  std::string err;
  int depth = 0;

  void ws() {
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  bool fail(const char* m) {
    if (err.empty()) err = std::string(m) + " at byte " + std::to_string(i);
    return false;
  }
  static void put_utf8(std::string& o, unsigned cp) {
    if (cp < 0x80) {
      o += static_cast<char>(cp);
    } else if (cp < 0x800) {
      o += static_cast<char>(0xC0 | (cp >> 6));
      o += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      o += static_cast<char>(0xE0 | (cp >> 12));
      o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      o += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      o += static_cast<char>(0xF0 | (cp >> 18));
      o += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      o += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  bool hex4(unsigned& v) {
    if (n - i < 4) return fail("truncated \\u escape");
    v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s[i++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else return fail("bad \\u escape");
    }
    return true;
  }
  // at '"'; decodes into out when non-null
  bool string(std::string* out) {
    ++i;
    while (i < n) {
      unsigned char c = static_cast<unsigned char>(s[i]);
      if (c == '"') {
        ++i;
        return true;
      }
      if (c < 0x20) return fail("control character in string");
      if (c != '\\') {
        if (out) *out += static_cast<char>(c);
        ++i;
        continue;
      }
      if (++i >= n) break;
      char e = s[i++];
      switch (e) {
        case '"': case '\\': case '/': if (out) *out += e; break;
        case 'b': if (out) *out += '\b'; break;
        case 'f': if (out) *out += '\f'; break;
        case 'n': if (out) *out += '\n'; break;
        case 'r': if (out) *out += '\r'; break;
        case 't': if (out) *out += '\t'; break;
        case 'u': {
          unsigned cp = 0;
          if (!hex4(cp)) return false;
          if (cp >= 0xD800 && cp < 0xDC00 && n - i >= 6 && s[i] == '\\' && s[i + 1] == 'u') {
            size_t save = i;
            i += 2;
            unsigned lo = 0;
            if (!hex4(lo)) return false;
            if (lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            else i = save;
          }
          if (out) put_utf8(*out, cp);
          break;
        }
        default: return fail("bad escape");
      }
    }
    return fail("unterminated string");
  }
  bool number() {
    size_t st = i;
    if (i < n && s[i] == '-') ++i;
    if (i >= n) return fail("bad number");
    if (s[i] == '0') ++i;
    else if (s[i] >= '1' && s[i] <= '9') while (i < n && s[i] >= '0' && s[i] <= '9') ++i;
    else return fail("bad number");
    if (i < n && s[i] == '.') {
      ++i;
      if (i >= n || s[i] < '0' || s[i] > '9') return fail("bad number");
      while (i < n && s[i] >= '0' && s[i] <= '9') ++i;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
      ++i;
      if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
      if (i >= n || s[i] < '0' || s[i] > '9') return fail("bad number");
      while (i < n && s[i] >= '0' && s[i] <= '9') ++i;
    }
    return i > st;
  }
  bool lit(const char* w) {
    size_t l = std::strlen(w);
    if (n - i < l || std::memcmp(s + i, w, l) != 0) return fail("invalid literal");
    i += l;
    return true;
  }
  bool value() {
    ws();
    if (i >= n) return fail("unexpected end of JSON");
    char c = s[i];
    if (c == '"') return string(nullptr);
    if (c == '{' || c == '[') {
      if (++depth > 512) return fail("JSON nested too deeply");
      bool obj = c == '{';
      ++i;
      ws();
      if (i < n && s[i] == (obj ? '}' : ']')) {
        ++i;
        --depth;
        return true;
      }
      for (;;) {
        if (obj) {
          ws();
          if (i >= n || s[i] != '"') return fail("expected object key");
          if (!string(nullptr)) return false;
          ws();
          if (i >= n || s[i] != ':') return fail("expected ':'");
          ++i;
        }
        if (!value()) return false;
        ws();
        if (i < n && s[i] == ',') {
          ++i;
          continue;
        }
        if (i < n && s[i] == (obj ? '}' : ']')) {
          ++i;
          --depth;
          return true;
        }
        return fail("expected ',' or closing bracket");
      }
    }
    if (c == 't') return lit("true");
    if (c == 'f') return lit("false");
    if (c == 'n') return lit("null");
    return number();
  }
};

// Iterates the members of the object at [b, e): calls f(key, value_begin, value_end).
template <typename F>
void members(const char* s, size_t b, size_t e, F f) {
  Scanner sc{s, e};
  sc.i = b;
  sc.ws();
  if (sc.i >= e || s[sc.i] != '{') return;
  ++sc.i;
  sc.ws();
  if (sc.i < e && s[sc.i] == '}') return;
  for (;;) {
    sc.ws();
    std::string key;
    if (sc.i >= e || s[sc.i] != '"' || !sc.string(&key)) return;
    sc.ws();
    if (sc.i >= e || s[sc.i] != ':') return;
    ++sc.i;
    sc.ws();
    size_t vb = sc.i;
    if (!sc.value()) return;
    f(key, vb, sc.i);
    sc.ws();
    if (sc.i < e && s[sc.i] == ',') {
      ++sc.i;
      continue;
    }
    return;
  }
}

bool ends_with_oom(const char* s, size_t vb, size_t ve) {
  static const char kOom[] = "not enough memory for buffer allocation";
  if (ve - vb < 2 || s[vb] != '"') return false;
  Scanner sc{s, ve};
  sc.i = vb;
  std::string txt;
  if (!sc.string(&txt)) return false;
  size_t l = sizeof(kOom) - 1;
  return txt.size() >= l && txt.compare(txt.size() - l, l, kOom) == 0;
}

}  // namespace

Envelope scan_envelope(const char* p, size_t n) {
  Envelope env;
  Scanner sc{p, n};
  if (!sc.value()) {
    env.problem = sc.err;
    return env;
  }
  sc.ws();
  if (sc.i != n) {
    env.problem = "trailing data after JSON value at byte " + std::to_string(sc.i);
    return env;
  }
  size_t b = 0;
  while (b < n && (p[b] == ' ' || p[b] == '\t' || p[b] == '\n' || p[b] == '\r')) ++b;
  if (b >= n || p[b] != '{') {
    env.problem = "handle() result is not a JSON object";
    return env;
  }
  bool have_ok = false, have_resp = false;
  members(p, b, n, [&](const std::string& k, size_t vb, size_t ve) {
    if (k == "ok") {
      have_ok = true;
      env.ok = ve - vb == 4 && std::memcmp(p + vb, "true", 4) == 0;
    } else if (k == "response") {
      have_resp = true;
      env.resp_begin = vb;
      env.resp_end = ve;
    }
  });
  if (!have_ok) {
    env.problem = "handle() result has no \"ok\" field";
    return env;
  }
  env.valid = true;
  if (!have_resp) {  // {"ok":true} without response: treat as empty response object
    env.resp_begin = env.resp_end = 0;
    return env;
  }
  const size_t rb = env.resp_begin, re = env.resp_end;
  if (p[rb] == '"') {
    env.resp_is_string = true;
    Scanner s2{p, re};
    s2.i = rb;
    s2.string(&env.resp_string);
  } else if (p[rb] == '{') {
    members(p, rb, re, [&](const std::string& k, size_t vb, size_t ve) {
      if (k == "Error" && !(ve - vb == 4 && std::memcmp(p + vb, "null", 4) == 0)) {
        env.resp_has_error = true;
        if (p[vb] == '"') {
          Scanner s3{p, ve};
          s3.i = vb;
          s3.string(&env.error_text);
        } else {
          env.error_text.assign(p + vb, ve - vb);
        }
      } else if (k == "Output") {
        if (p[vb] == '"') {
          env.oom_output = env.oom_output || ends_with_oom(p, vb, ve);
        } else if (p[vb] == '{') {
          members(p, vb, ve, [&](const std::string& k2, size_t b2, size_t e2) {
            if (k2 == "data") env.oom_output = env.oom_output || ends_with_oom(p, b2, e2);
          });
        }
      }
    });
  }
  return env;
}

}  // namespace aocu::engine
