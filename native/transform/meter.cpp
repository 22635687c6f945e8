// The @permaweb/wasm-metering rewrite (see docs/ABI.md), reproduced op for op so GasUsed matches the reference:
// import metering.usegas after the existing imports, shift function indices, and charge each straight-line
// segment with `<t>.const (cost + 91); call usegas` before it.
#include <array>
#include <climits>

#include "transform/transform.h"
#include "transform/wasm_binary.h"

namespace aocu::transform {

using namespace aocu::wasm;

namespace {

constexpr const char* kMeterModule = "metering";
constexpr const char* kMeterField = "usegas";
constexpr int64_t kMeterOverhead = 91;  // cost of the `const` (1) + `call` (90) the statement adds

// Cost by opcode, from the reference default cost table keyed by the op name without its type prefix
// (i32.add -> "add"). -1 marks opcodes the reference's parser (wasm-json-toolkit) does not know.
struct CostTable {
  std::array<int32_t, 256> cost;
  std::array<bool, 256> branching{};
  CostTable() {
    cost.fill(-1);
    auto set = [&](int lo, int hi, int32_t c) {
      for (int o = lo; o <= hi; ++o) cost[o] = c;
    };
    set(0x00, 0x00, 1);      // unreachable
    set(0x01, 0x02, 1);      // nop, block
    set(0x03, 0x04, 1);      // loop, if
    set(0x05, 0x05, 90);     // else
    set(0x0B, 0x0B, 0);      // end
    set(0x0C, 0x0D, 90);     // br, br_if
    set(0x0E, 0x0E, 120);    // br_table
    set(0x0F, 0x10, 90);     // return, call
    set(0x11, 0x11, 10000);  // call_indirect
    set(0x1A, 0x1B, 120);    // drop, select
    set(0x20, 0x24, 120);    // get/set/tee_local, get/set_global
    set(0x28, 0x3E, 120);    // loads and stores
    set(0x3F, 0x3F, 100);    // current_memory
    set(0x40, 0x40, 10000);  // grow_memory
    set(0x41, 0x44, 1);      // const
    set(0x45, 0x4F, 45);     // i32 eqz eq ne lt gt le ge
    set(0x50, 0x5A, 45);     // i64 eqz eq ne lt gt le ge
    set(0x5B, 0x5C, 45);     // f32 eq ne
    set(0x5D, 0x60, 0);      // f32 lt gt le ge
    set(0x61, 0x62, 45);     // f64 eq ne
    set(0x63, 0x66, 0);      // f64 lt gt le ge
    for (int base : {0x67, 0x79}) {  // i32 / i64 arithmetic
      set(base + 0, base + 2, 45);       // clz ctz popcnt
      set(base + 3, base + 5, 45);       // add sub mul
      set(base + 6, base + 9, 36000);    // div_s div_u rem_s rem_u
      set(base + 10, base + 12, 45);     // and or xor
      set(base + 13, base + 15, 67);     // shl shr_s shr_u
      set(base + 16, base + 17, 90);     // rotl rotr
    }
    for (int base : {0x8B, 0x99}) {  // f32 / f64 arithmetic
      set(base + 0, base + 6, 0);   // abs neg ceil floor trunc nearest sqrt
      set(base + 7, base + 9, 45);  // add sub mul
      set(base + 10, base + 13, 0); // div min max copysign
    }
    set(0xA7, 0xBF, 0);  // conversions, reinterpretations
    set(0xC0, 0xC4, 0);  // sign extension
    for (int o : {0x40, 0x0B, 0x0C, 0x0E, 0x0D, 0x04, 0x05, 0x0F, 0x03}) branching[o] = true;
  }
};

const CostTable& costs() {
  static const CostTable t;
  return t;
}

std::string hex(uint32_t v) {
  static const char* h = "0123456789abcdef";
  std::string s;
  do {
    s.insert(s.begin(), h[v & 15]);
    v >>= 4;
  } while (v);
  if (s.size() < 2) s.insert(s.begin(), '0');
  return "0x" + s;
}

[[noreturn]] void refuse(const std::string& why) {
  throw Error("cannot meter this module: " + why);
}

// Skips one constant expression (up to and including its `end`), refusing what the reference cannot parse.
void skip_const_expr(Reader& r) {
  for (;;) {
    Instr in = decode(r);
    if (in.op == 0x0B) return;
    if (in.op != 0x41 && in.op != 0x42 && in.op != 0x43 && in.op != 0x44 && in.op != 0x23)
      refuse("constant expression uses opcode " + hex(in.op) + " (only MVP constants are supported)");
  }
}

void put_meter_call(Bytes& out, bool i64, int64_t cost, uint32_t fidx) {
  out.push_back(i64 ? 0x42 : 0x41);
  put_s64(out, cost);
  out.push_back(0x10);
  put_u32(out, fidx);
}

Bytes meter_body(Reader& r, bool i64, uint32_t F, uint32_t func_no) {
  Bytes out;
  // Locals are copied as they are (their cost is 0 in the reference).
  size_t locals_start = r.pos();
  uint32_t groups = r.u32();
  for (uint32_t i = 0; i < groups; ++i) {
    r.u32();
    read_valtype(r);
  }
  put_bytes(out, r.data() + locals_start, r.pos() - locals_start);

  const CostTable& ct = costs();
  Bytes seg;
  int64_t cost = 0;
  while (!r.eof()) {
    size_t at = r.offset();
    Instr in = decode(r);
    int32_t c = (in.op < 0xFC) ? ct.cost[in.op] : -1;
    if (c < 0) {
      std::string what = hex(in.op);
      if (in.op >= 0xFC) what += " " + std::to_string(in.sub);
      refuse("function " + std::to_string(func_no) + " uses opcode " + what + " at byte " + std::to_string(at) +
             " (the metering formats accept MVP + sign-extension opcodes only: no bulk memory, SIMD, "
             "exceptions or reference types)");
    }
    if ((in.op == 0x02 || in.op == 0x03 || in.op == 0x04) && in.bt.kind == BlockType::Index)
      refuse("function " + std::to_string(func_no) + " uses a multi-value block type");
    if ((in.op == 0x11) && r.data()[in.end - 1] != 0x00)
      refuse("call_indirect on a table other than 0");
    if (in.op == 0x10 && in.idx >= F) {
      seg.push_back(0x10);
      put_u32(seg, static_cast<uint64_t>(in.idx) + 1);
    } else {
      put_bytes(seg, r.data() + in.start, in.end - in.start);
    }
    cost += c;
    if (ct.branching[in.op]) {
      if (cost != 0) {
        int64_t charged = cost + kMeterOverhead;
        if (!i64 && charged > INT32_MAX) refuse("a segment costs more than fits an i32 meter");
        put_meter_call(out, i64, charged, F);
      }
      put_bytes(out, seg);
      seg.clear();
      cost = 0;
    }
  }
  if (!seg.empty()) throw Error("invalid wasm: function " + std::to_string(func_no) + " does not end with `end`");
  return out;
}

}  // namespace

Bytes meter(const uint8_t* data, size_t size, bool i64) {
  Module m(data, size);
  const uint8_t meter_type = i64 ? 0x7E : 0x7F;

  // Type section: append (meterType) -> ().
  uint32_t type_count = 0;
  Bytes type_payload;
  if (const Section* s = m.find(kType)) {
    Reader r = m.reader(*s);
    type_count = r.u32();
    put_u32(type_payload, static_cast<uint64_t>(type_count) + 1);
    put_bytes(type_payload, r.here(), r.remaining());
  } else {
    put_u32(type_payload, 1);
  }
  put_functype(type_payload, FuncType{{ValType{meter_type}}, {}});
  const uint32_t meter_type_idx = type_count;

  // Import section: count imported functions, refuse an existing metering.usegas, append ours.
  uint32_t F = 0, import_count = 0;
  Bytes import_payload;
  if (const Section* s = m.find(kImport)) {
    Reader r = m.reader(*s);
    import_count = r.u32();
    size_t entries = r.pos();
    for (uint32_t i = 0; i < import_count; ++i) {
      std::string mod = r.name(), field = r.name();
      if (mod == kMeterModule && field == kMeterField) refuse("it already imports metering.usegas");
      uint8_t kind = r.u8();
      switch (kind) {
        case 0: r.u32(); ++F; break;
        case 1: read_valtype(r); skip_limits(r); break;
        case 2: skip_limits(r); break;
        case 3: read_valtype(r); r.u8(); break;
        case 4: r.u8(); r.u32(); break;
        default: r.fail("bad import kind");
      }
    }
    if (!r.eof()) r.fail("trailing bytes in import section");
    put_u32(import_payload, static_cast<uint64_t>(import_count) + 1);
    put_bytes(import_payload, r.data() + entries, r.pos() - entries);
  } else {
    put_u32(import_payload, 1);
  }
  put_name(import_payload, kMeterModule);
  put_name(import_payload, kMeterField);
  import_payload.push_back(0x00);
  put_u32(import_payload, meter_type_idx);

  auto shift = [F](uint32_t idx) { return idx >= F ? static_cast<uint64_t>(idx) + 1 : idx; };

  Bytes out(data, data + 8);
  bool wrote_type = false, wrote_import = false;
  auto flush_new = [&](int before_rank) {
    if (!wrote_type && section_order(kType) < before_rank) {
      put_section(out, kType, type_payload);
      wrote_type = true;
    }
    if (!wrote_import && section_order(kImport) < before_rank) {
      put_section(out, kImport, import_payload);
      wrote_import = true;
    }
  };

  uint32_t defined = 0;
  if (const Section* s = m.find(kFunction)) {
    Reader r = m.reader(*s);
    defined = r.u32();
  }
  uint32_t bodies = 0;
  if (const Section* s = m.find(kCode)) {
    Reader r = m.reader(*s);
    bodies = r.u32();
  }
  if (defined != bodies) throw Error("invalid wasm: function and code section counts differ");

  uint32_t func_no = 0;
  for (const Section& s : m.sections) {
    if (s.id != kCustom) flush_new(section_order(s.id));
    Reader r = m.reader(s);
    Bytes p;
    switch (s.id) {
      case kType:
      case kImport:
        continue;  // emitted by flush_new at their position
      case kGlobal: {
        uint32_t n = r.u32();
        for (uint32_t i = 0; i < n; ++i) {
          read_valtype(r);
          r.u8();
          skip_const_expr(r);
        }
        put_bytes(out, data + s.start, s.end - s.start);
        continue;
      }
      case kExport: {
        uint32_t n = r.u32();
        put_u32(p, n);
        for (uint32_t i = 0; i < n; ++i) {
          put_name(p, r.name());
          uint8_t kind = r.u8();
          uint32_t idx = r.u32();
          p.push_back(kind);
          put_u32(p, kind == 0 ? shift(idx) : idx);
        }
        break;
      }
      case kStart:
        put_u32(p, shift(r.u32()));
        break;
      case kElement: {
        uint32_t n = r.u32();
        put_u32(p, n);
        for (uint32_t i = 0; i < n; ++i) {
          uint32_t flags = r.u32();
          if (flags != 0) refuse("element segment with flags " + std::to_string(flags) + " (only active MVP segments)");
          size_t e = r.pos();
          skip_const_expr(r);
          put_u32(p, 0);
          put_bytes(p, r.data() + e, r.pos() - e);
          uint32_t k = r.u32();
          put_u32(p, k);
          for (uint32_t j = 0; j < k; ++j) put_u32(p, shift(r.u32()));
        }
        break;
      }
      case kCode: {
        uint32_t n = r.u32();
        put_u32(p, n);
        for (uint32_t i = 0; i < n; ++i, ++func_no) {
          uint32_t len = r.u32();
          size_t at = r.offset();
          Reader body(r.take(len), len, at);
          Bytes b = meter_body(body, i64, F, F + func_no);
          put_u32(p, b.size());
          put_bytes(p, b);
        }
        break;
      }
      default:
        put_bytes(out, data + s.start, s.end - s.start);
        continue;
    }
    if (!r.eof()) r.fail("trailing bytes in section " + std::to_string(s.id));
    put_section(out, s.id, p);
  }
  flush_new(1000);
  return out;
}

}  // namespace aocu::transform
