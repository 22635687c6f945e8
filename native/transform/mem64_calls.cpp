// Whole-module facts for the memory64 lowering (mem64.h): the memory's limits (memory64_info), which functions
// only direct calls reach, and which of their i64 parameters every call site passes known, so their first
// accesses need no check.
#include <string>
#include <vector>

#include "transform/mem64.h"
#include "transform/transform.h"
#include "transform/wasm_binary.h"

namespace aocu::transform::mem64 {

using namespace aocu::wasm;

namespace {

Sig sig_of(const FuncType& t) {
  Sig s{static_cast<uint32_t>(t.params.size()), static_cast<uint32_t>(t.results.size()), {}};
  for (const ValType& v : t.params) s.i64.push_back(v.size() == 1 && v[0] == 0x7E);
  return s;
}

// Marks the functions a constant expression takes a reference to (ref.func) as escaping.
void scan_const_expr(Reader& r, std::vector<bool>& escapes) {
  for (Instr in = decode(r); in.op != 0x0B; in = decode(r))
    if (in.op == 0xD2 && in.idx < escapes.size()) escapes[in.idx] = true;
}

// Functions that can be called other than by a direct call of this module (exported, the start function,
// in an element segment, or referenced by ref.func): their parameters are never assumed known.
std::vector<bool> escaping(const Module& m, size_t nfuncs) {
  std::vector<bool> esc(nfuncs, false);
  if (const Section* s = m.find(kExport)) {
    Reader r = m.reader(*s);
    for (uint32_t i = 0, n = r.u32(); i < n; ++i) {
      r.name();
      uint8_t kind = r.u8();
      uint32_t idx = r.u32();
      if (kind == 0 && idx < nfuncs) esc[idx] = true;
    }
  }
  if (const Section* s = m.find(kStart)) {
    Reader r = m.reader(*s);
    uint32_t idx = r.u32();
    if (idx < nfuncs) esc[idx] = true;
  }
  if (const Section* s = m.find(kGlobal)) {
    Reader r = m.reader(*s);
    for (uint32_t i = 0, n = r.u32(); i < n; ++i) {
      read_valtype(r);
      r.u8();
      scan_const_expr(r, esc);
    }
  }
  if (const Section* s = m.find(kElement)) {
    Reader r = m.reader(*s);
    for (uint32_t i = 0, n = r.u32(); i < n; ++i) {
      const uint32_t flags = r.u32();
      if (flags > 7) r.fail("bad element segment flags");
      if (flags == 2 || flags == 6) r.u32();               // table index
      if (!(flags & 1)) scan_const_expr(r, esc);           // active: offset expression
      if (flags & 4) {                                     // expressions
        if (flags != 4) read_valtype(r);
        for (uint32_t k = 0, c = r.u32(); k < c; ++k) scan_const_expr(r, esc);
      } else {                                             // function indices
        if (flags != 0) r.u8();                            // element kind
        for (uint32_t k = 0, c = r.u32(); k < c; ++k) {
          uint32_t idx = r.u32();
          if (idx < nfuncs) esc[idx] = true;
        }
      }
    }
  }
  if (const Section* s = m.find(kCode)) {
    Reader r = m.reader(*s);
    for (uint32_t i = 0, n = r.u32(); i < n; ++i) {
      uint32_t len = r.u32();
      Reader body(r.take(len), len);
      for (uint32_t g = 0, groups = body.u32(); g < groups; ++g) {
        body.u32();
        read_valtype(body);
      }
      while (!body.eof()) {
        Instr in = decode(body);
        if (in.op == 0xD2 && in.idx < nfuncs) esc[in.idx] = true;
      }
    }
  }
  return esc;
}

}  // namespace

// Signatures, and the parameters each internal function receives known from every direct call site: the
// greatest fixed point, from "all i64 parameters known" down (a pass over every body finds what its call
// sites pass given the current entry facts; repeat until nothing changes). Sound because each body's facts
// hold whenever its entry facts do, and every call into a non-escaping function is a direct call whose
// site was checked. On anything unexpected the entry facts stay empty (every first use checked).
Interproc analyse(const Module& m, const std::vector<FuncType>& types, const std::vector<uint32_t>& func_types,
                  bool branch) {
  Interproc ip;
  for (const FuncType& t : types) ip.types.push_back(sig_of(t));
  for (const Import& im : read_imports(m))
    if (im.kind == 0) ip.funcs.push_back(im.type < types.size() ? sig_of(types[im.type]) : Sig{});
  const size_t imported = ip.funcs.size();
  for (uint32_t t : func_types) ip.funcs.push_back(ip.types[t]);
  const size_t nf = ip.funcs.size();
  for (size_t f = 0; f < nf; ++f) ip.entry.emplace_back(ip.funcs[f].params, false);
  const Section* code = m.find(kCode);
  if (!code) return ip;
  try {
    const std::vector<bool> esc = escaping(m, nf);
    for (size_t f = imported; f < nf; ++f)
      if (!esc[f]) ip.entry[f] = ip.funcs[f].i64;
    for (int pass = 0; pass < 64; ++pass) {
      ip.passed = ip.entry;
      for (size_t f = 0; f < nf; ++f)
        if (f < imported || esc[f]) ip.passed[f].clear();  // not tracked
      Reader r = m.reader(*code);
      for (uint32_t i = 0, n = r.u32(); i < n && i < func_types.size(); ++i) {
        uint32_t len = r.u32();
        Reader body(r.take(len), len, r.offset());
        lower_body(body, static_cast<uint32_t>(imported + i), branch, ip);
      }
      bool same = true;
      for (size_t f = imported; f < nf; ++f)
        if (!esc[f] && ip.passed[f] != ip.entry[f]) {
          ip.entry[f] = ip.passed[f];
          same = false;
        }
      if (same) {
        ip.passed.assign(nf, {});
        return ip;
      }
    }
  } catch (const Error&) {
  }
  for (auto& e : ip.entry) e.assign(e.size(), false);  // no fixed point reached: assume nothing
  ip.passed.assign(nf, {});
  return ip;
}

}  // namespace aocu::transform::mem64

namespace aocu::transform {

using namespace aocu::wasm;

Memory64Info memory64_info(const uint8_t* data, size_t size) {
  Module m(data, size);
  Memory64Info info;
  for (const Import& im : read_imports(m))
    if (im.kind == 2) ++info.memories;
  info.imported = info.memories > 0;
  if (const Section* s = m.find(kMemory)) {
    Reader r = m.reader(*s);
    uint32_t n = r.u32();
    info.memories += n;
    if (n > 0) {
      info.flags = r.u32();
      info.min_pages = r.u64();
      info.has_max = info.flags & 1;
      if (info.has_max) info.max_pages = r.u64();
    }
  }
  info.memory64 = info.memories == 1 && !info.imported && (info.flags & 0x04);
  return info;
}

}  // namespace aocu::transform
