// WebAssembly binary reading/writing primitives for the transforms (see wasm_binary.h).
#include "transform/wasm_binary.h"

#include <cstring>

namespace aocu::wasm {

void Reader::fail(const std::string& what) const {
  throw Error("invalid wasm at byte " + std::to_string(offset()) + ": " + what);
}

uint8_t Reader::u8() {
  if (i_ >= n_) fail("unexpected end");
  return p_[i_++];
}

uint8_t Reader::peek() const {
  if (i_ >= n_) fail("unexpected end");
  return p_[i_];
}

uint64_t Reader::uleb(int max_bits) {
  uint64_t v = 0;
  int shift = 0;
  for (;;) {
    uint8_t b = u8();
    if (shift >= max_bits) fail("LEB128 too long");
    uint64_t part = b & 0x7f;
    if (shift + 7 > max_bits && (part >> (max_bits - shift)) != 0) fail("LEB128 overflows " + std::to_string(max_bits) + " bits");
    v |= part << shift;
    shift += 7;
    if ((b & 0x80) == 0) return v;
  }
}

int64_t Reader::sleb(int bits) {
  uint64_t v = 0;
  int shift = 0, count = 0;
  const int max_bytes = (bits + 6) / 7;
  uint8_t b;
  do {
    b = u8();
    if (++count > max_bytes) fail("signed LEB128 too long");
    if (shift < 64) v |= static_cast<uint64_t>(b & 0x7f) << shift;
    shift += 7;
  } while (b & 0x80);
  if (shift < 64 && (b & 0x40)) v |= ~uint64_t{0} << shift;
  int64_t sv = static_cast<int64_t>(v);
  if (bits < 64) {
    int64_t lo = -(int64_t{1} << (bits - 1)), hi = (int64_t{1} << (bits - 1)) - 1;
    if (sv < lo || sv > hi) fail("signed LEB128 out of range");
  }
  return sv;
}

uint32_t Reader::u32() { return static_cast<uint32_t>(uleb(32)); }
uint64_t Reader::u64() { return uleb(64); }
int32_t Reader::s32() { return static_cast<int32_t>(sleb(32)); }
int64_t Reader::s64() { return sleb(64); }
int64_t Reader::s33() { return sleb(33); }

const uint8_t* Reader::take(size_t n) {
  if (n > n_ - i_) fail("unexpected end (need " + std::to_string(n) + " bytes)");
  const uint8_t* q = p_ + i_;
  i_ += n;
  return q;
}

std::string Reader::name() {
  uint32_t n = u32();
  const uint8_t* q = take(n);
  return std::string(reinterpret_cast<const char*>(q), n);
}

void put_u32(Bytes& out, uint64_t v) {
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    out.push_back(v ? (b | 0x80) : b);
  } while (v);
}

void put_s64(Bytes& out, int64_t v) {
  for (;;) {
    uint8_t b = v & 0x7f;
    v >>= 7;  // arithmetic shift
    bool done = (v == 0 && !(b & 0x40)) || (v == -1 && (b & 0x40));
    out.push_back(done ? b : (b | 0x80));
    if (done) return;
  }
}

void put_bytes(Bytes& out, const uint8_t* p, size_t n) { out.insert(out.end(), p, p + n); }

void put_name(Bytes& out, const std::string& s) {
  put_u32(out, s.size());
  put_bytes(out, reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

void put_section(Bytes& out, uint8_t id, const Bytes& payload) {
  out.push_back(id);
  put_u32(out, payload.size());
  put_bytes(out, payload);
}

ValType read_valtype(Reader& r) {
  uint8_t b = r.u8();
  ValType t{b};
  if (b == 0x63 || b == 0x64) {  // (ref null ht) / (ref ht): keep the heap type bytes
    size_t s = r.pos();
    r.s33();
    t.insert(t.end(), r.data() + s, r.data() + r.pos());
  } else if (b < 0x40 || b > 0x7f) {
    r.fail("bad value type 0x" + std::to_string(b));
  }
  return t;
}

FuncType read_functype_body(Reader& r) {
  FuncType t;
  uint32_t np = r.u32();
  for (uint32_t i = 0; i < np; ++i) t.params.push_back(read_valtype(r));
  uint32_t nr = r.u32();
  for (uint32_t i = 0; i < nr; ++i) t.results.push_back(read_valtype(r));
  return t;
}

void put_functype(Bytes& out, const FuncType& t) {
  out.push_back(0x60);
  put_u32(out, t.params.size());
  for (auto& v : t.params) put_bytes(out, v);
  put_u32(out, t.results.size());
  for (auto& v : t.results) put_bytes(out, v);
}

BlockType read_blocktype(Reader& r) {
  BlockType bt;
  uint8_t b = r.peek();
  if (b == 0x40) {
    r.u8();
  } else if (b == 0x63 || b == 0x64 || (b >= 0x40 && b <= 0x7f)) {
    bt.kind = BlockType::Value;
    bt.val = read_valtype(r);
  } else {
    int64_t v = r.s33();
    if (v < 0) r.fail("bad block type");
    bt.kind = BlockType::Index;
    bt.index = static_cast<uint32_t>(v);
  }
  return bt;
}

void put_blocktype(Bytes& out, const BlockType& bt) {
  switch (bt.kind) {
    case BlockType::Empty: out.push_back(0x40); break;
    case BlockType::Value: put_bytes(out, bt.val); break;
    case BlockType::Index: put_s64(out, bt.index); break;
  }
}

Module::Module(const uint8_t* p, size_t n) : data(p), size(n) {
  static const uint8_t kHeader[8] = {0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00};
  if (n < 8 || std::memcmp(p, kHeader, 4) != 0) throw Error("invalid wasm: bad magic (not a wasm binary)");
  if (std::memcmp(p + 4, kHeader + 4, 4) != 0) throw Error("invalid wasm: unsupported version (components are not modules)");
  Reader r(p, n);
  r.take(8);
  int last = 0;
  while (!r.eof()) {
    Section s;
    s.start = r.pos();
    s.id = r.u8();
    if (s.id > kTag) r.fail("unknown section id " + std::to_string(s.id));
    s.payload_len = r.u32();
    s.payload = r.pos();
    r.take(s.payload_len);
    s.end = r.pos();
    if (s.id != kCustom) {
      int ord = section_order(s.id);
      if (ord <= last) throw Error("invalid wasm: section " + std::to_string(s.id) + " out of order or duplicated");
      last = ord;
    }
    sections.push_back(s);
  }
}

const Section* Module::find(uint8_t id) const {
  for (auto& s : sections)
    if (s.id == id) return &s;
  return nullptr;
}

int section_order(uint8_t id) {
  // Order: type import function table memory tag global export start element datacount code data.
  // ids: 0 custom,1 type,2 import,3 function,4 table,5 memory,6 global,7 export,8 start,9 element,
  //      10 code,11 data,12 datacount,13 tag
  static const int kRank[14] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 12, 13, 11, 6};
  return id < 14 ? kRank[id] : 100;
}

void skip_limits(Reader& r) {
  uint32_t flags = r.u32();
  r.u64();
  if (flags & 1) r.u64();
  if (flags & 0x08) r.u32();  // custom page size (log2)
}

namespace {

void memarg(Reader& r) {
  uint32_t align = r.u32();
  if (align & 0x40) r.u32();  // multi-memory: explicit memory index
  r.u64();                    // offset (u64 for memory64; a superset of u32)
}

void decode_fc(Reader& r, Instr& in) {
  in.sub = r.u32();
  switch (in.sub) {
    case 0: case 1: case 2: case 3: case 4: case 5: case 6: case 7: return;  // trunc_sat
    case 8: r.u32(); r.u32(); return;    // memory.init data mem
    case 9: r.u32(); return;             // data.drop
    case 10: r.u32(); r.u32(); return;   // memory.copy
    case 11: r.u32(); return;            // memory.fill
    case 12: r.u32(); r.u32(); return;   // table.init
    case 13: r.u32(); return;            // elem.drop
    case 14: r.u32(); r.u32(); return;   // table.copy
    case 15: case 16: case 17: r.u32(); return;  // table.grow/size/fill
    default: r.fail("unknown 0xFC opcode " + std::to_string(in.sub));
  }
}

void decode_fd(Reader& r, Instr& in) {
  in.sub = r.u32();
  uint32_t s = in.sub;
  if (s <= 11 || s == 92 || s == 93) { memarg(r); return; }   // loads/stores, load_zero
  if (s == 12 || s == 13) { r.take(16); return; }              // v128.const, i8x16.shuffle
  if (s >= 21 && s <= 34) { r.u8(); return; }                  // extract/replace lane
  if (s >= 84 && s <= 91) { memarg(r); r.u8(); return; }       // load/store lane
  if (s <= 0x113) return;                                      // everything else: no immediates
  r.fail("unknown 0xFD opcode " + std::to_string(s));
}

void decode_fe(Reader& r, Instr& in) {
  in.sub = r.u32();
  if (in.sub == 3) { r.u8(); return; }  // atomic.fence
  if (in.sub <= 2 || (in.sub >= 0x10 && in.sub <= 0x4e)) { memarg(r); return; }
  r.fail("unknown 0xFE opcode " + std::to_string(in.sub));
}

}  // namespace

Instr decode(Reader& r) {
  Instr in;
  in.start = r.pos();
  in.op = r.u8();
  uint8_t op = in.op;
  switch (op) {
    case 0x00: case 0x01: case 0x05: case 0x0A: case 0x0B: case 0x0F: case 0x19: case 0x1A: case 0x1B:
    case 0xD1: case 0xD3: case 0xD4:
      break;
    case 0x02: case 0x03: case 0x04: case 0x06:
      in.bt = read_blocktype(r);
      break;
    case 0x07: case 0x08: case 0x09: case 0x0C: case 0x0D: case 0x10: case 0x12: case 0x14: case 0x15:
    case 0x18: case 0xD2: case 0xD5: case 0xD6:
      in.idx = r.u32();
      break;
    case 0x0E: {
      uint32_t n = r.u32();
      if (n > r.remaining()) r.fail("br_table too long");
      for (uint32_t i = 0; i <= n; ++i) in.labels.push_back(r.u32());
      break;
    }
    case 0x11: case 0x13:
      in.idx = r.u32();
      r.u32();  // table index (MVP: reserved 0x00 byte, same encoding)
      break;
    case 0x1C: {
      uint32_t n = r.u32();
      for (uint32_t i = 0; i < n; ++i) read_valtype(r);
      break;
    }
    case 0x1F: {
      in.bt = read_blocktype(r);
      uint32_t n = r.u32();
      for (uint32_t i = 0; i < n; ++i) {
        uint8_t k = r.u8();
        if (k > 3) r.fail("bad try_table catch kind");
        if (k < 2) r.u32();
        r.u32();
      }
      break;
    }
    case 0x20: case 0x21: case 0x22: case 0x23: case 0x24: case 0x25: case 0x26:
      in.idx = r.u32();
      break;
    case 0x3F: case 0x40:
      in.idx = r.u32();  // memory index (MVP: reserved 0x00)
      break;
    case 0x41:
      in.const_val = r.s32();
      break;
    case 0x42:
      in.const_val = r.s64();
      break;
    case 0x43: r.take(4); break;
    case 0x44: r.take(8); break;
    case 0xD0: r.s33(); break;  // ref.null heap type
    case 0xFC: decode_fc(r, in); break;
    case 0xFD: decode_fd(r, in); break;
    case 0xFE: decode_fe(r, in); break;
    default:
      if (op >= 0x28 && op <= 0x3E) {
        memarg(r);
      } else if (op >= 0x45 && op <= 0xC4) {
        // numeric, no immediates
      } else {
        r.fail("unsupported opcode 0x" + [](uint8_t v) {
          const char* h = "0123456789abcdef";
          return std::string{h[v >> 4], h[v & 15]};
        }(op));
      }
  }
  in.end = r.pos();
  return in;
}

std::vector<Import> read_imports(const Module& m) {
  std::vector<Import> out;
  const Section* s = m.find(kImport);
  if (!s) return out;
  Reader r = m.reader(*s);
  uint32_t n = r.u32();
  for (uint32_t i = 0; i < n; ++i) {
    Import im;
    im.module = r.name();
    im.field = r.name();
    im.kind = r.u8();
    switch (im.kind) {
      case 0: im.type = r.u32(); break;
      case 1: read_valtype(r); skip_limits(r); break;
      case 2: skip_limits(r); break;
      case 3: read_valtype(r); r.u8(); break;
      case 4: r.u8(); im.type = r.u32(); break;
      default: r.fail("bad import kind");
    }
    out.push_back(std::move(im));
  }
  return out;
}

std::vector<FuncType> read_types(const Module& m) {
  std::vector<FuncType> types;
  const Section* s = m.find(kType);
  if (!s) return types;
  Reader r = m.reader(*s);
  uint32_t n = r.u32();
  for (uint32_t i = 0; i < n; ++i) {
    uint8_t form = r.u8();
    if (form != 0x60) r.fail("only plain function types are supported (GC/rec types are not)");
    types.push_back(read_functype_body(r));
  }
  if (!r.eof()) r.fail("trailing bytes in type section");
  return types;
}

}  // namespace aocu::wasm
