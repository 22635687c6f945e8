// memory64 lowering (docs/ABI.md, Module formats): a wasm64 module whose memory can never exceed
// 4 GiB - 64 KiB runs on a 32-bit memory, so wasmtime elides bounds checks with guard pages. Function
// signatures, globals and the in-memory pointer layout stay 64-bit; only the memory's index type changes:
//  - every load/store address is saturated to 32 bits (>= 2^32 -> 0xFFFFFFFF, a select) and a static offset
//    >= 2^32 becomes 0xFFFFFFFF on address 0xFFFFFFFF. The memory is at most 2^32 - 2^16 bytes, so an access
//    the 64-bit run traps on still traps (out of bounds, the same error), and every access that succeeds
//    there touches the same bytes here. An address read from a local that already served as an address
//    since the last join point (loop, else, end), unchanged since, is < 2^32 (else that access trapped): it is only
//    truncated. (`branch_checks` makes the check a branch to a trapping access instead: measured slower.)
//  - memory.size / memory.grow results are extended to i64 (grow's -1 sign-extended); grow's delta is
//    saturated (a delta >= 2^32 fails with -1 as it does on the 64-bit memory);
//  - memory.fill / memory.copy / memory.init operands are converted the same way (an operand >= 2^32 makes
//    d + n exceed the memory, which traps in both runs before anything is written);
//  - active data segment offsets become i32 constants.
// The caller decides when the bound holds (the memory's declared maximum or the instance's memory limit);
// the rewrite itself depends on the module bytes only, so it is cached by content hash.
#include <algorithm>
#include <string>

#include "transform/transform.h"
#include "transform/wasm_binary.h"

namespace aocu::transform {

using namespace aocu::wasm;

namespace {

constexpr uint64_t kPages32 = 65536;  // pages of a full 32-bit memory

[[noreturn]] void refuse(const std::string& why) { throw Error("cannot lower memory64: " + why); }

// Scratch locals appended to each rewritten function, by slot (offsets from the first new local).
enum Slot : uint32_t { kT64 = 0, kA64, kB64, kA32, kB32, kF32, kF64, kV128, kSlots };
const uint8_t kSlotType[kSlots] = {0x7E, 0x7E, 0x7E, 0x7F, 0x7F, 0x7D, 0x7C, 0x7B};

struct Body {
  Bytes code;
  bool branch = false;  // address checks as a branch (checked) or as a select (saturate)
  uint32_t base = 0;  // index of the first scratch local
  bool used = false, v128 = false;  // used: the body changed (scratch locals are declared)

  void local(uint8_t op, Slot s) {
    used = true;
    if (s == kV128) v128 = true;
    code.push_back(op);
    put_u32(code, static_cast<uint64_t>(base) + s);
  }
  // i64 address on the stack -> i32: itself when < 2^32, else 0xFFFFFFFF (always out of bounds here).
  void saturate() {
    local(0x22, kT64);  // local.tee
    code.push_back(0x42);
    put_s64(code, 0xFFFFFFFFLL);
    local(0x20, kT64);
    code.push_back(0x42);
    put_s64(code, 0x100000000LL);
    code.push_back(0x54);  // i64.lt_u
    code.push_back(0x1B);  // select
    code.push_back(0xA7);  // i32.wrap_i64
  }
  // i64 address on the stack -> i32, out of bounds when it is >= 2^32: saturate(), or with `branch` a
  // truncation plus a branch (predicted not taken) to an access at 0xFFFFFFFF + 0xFFFFFFFF. The branch keeps
  // the check off the address's dependency chain but splits blocks; on lua64 it ran ~3-10% slower.
  void checked() {
    if (!branch) return saturate();
    local(0x22, kT64);  // local.tee
    code.push_back(0x42);
    put_s64(code, 32);
    code.push_back(0x88);  // i64.shr_u
    code.push_back(0xA7);  // i32.wrap_i64
    code.push_back(0x04);  // if
    code.push_back(0x40);
    code.push_back(0x41);  // i32.const -1; i32.load8_u offset=0xFFFFFFFF: beyond any 32-bit memory
    put_s64(code, -1);
    code.push_back(0x2D);
    put_u32(code, 0);
    put_u32(code, 0xFFFFFFFFULL);
    code.push_back(0x1A);  // drop
    code.push_back(0x0B);  // end
    local(0x20, kT64);
    code.push_back(0xA7);
  }
  void always_oob() {  // drop the address, use 0xFFFFFFFF (paired with offset 0xFFFFFFFF)
    code.push_back(0x1A);
    code.push_back(0x41);
    put_s64(code, -1);
  }
};

// Type of the value a store (or lane op) keeps above the address, or kSlots when the address is on top.
Slot value_slot(const Instr& in) {
  if (in.op == 0x36 || in.op == 0x3A || in.op == 0x3B) return kA32;
  if (in.op == 0x37 || (in.op >= 0x3C && in.op <= 0x3E)) return kA64;
  if (in.op == 0x38) return kF32;
  if (in.op == 0x39) return kF64;
  if (in.op == 0xFD && (in.sub == 11 || (in.sub >= 84 && in.sub <= 91))) return kV128;
  return kSlots;
}

bool has_memarg(const Instr& in) {
  if (in.op >= 0x28 && in.op <= 0x3E) return true;
  if (in.op != 0xFD) return false;
  uint32_t s = in.sub;
  return s <= 11 || s == 92 || s == 93 || (s >= 84 && s <= 91);
}

uint64_t access_offset(const Reader& r, const Instr& in) {
  Reader ir(r.data() + in.start, in.end - in.start);
  ir.u8();
  if (in.op == 0xFD) ir.u32();
  uint32_t align = ir.u32();
  if (align & 0x40) ir.u32();
  return ir.u64();
}

// Rewrites one memory access: [address conversion] op memarg(offset 32-bit) [lane]. `known`: the address on
// the stack was already accessed in this straight-line stretch (so it is < 2^32): a truncation suffices.
// `converted`: the caller already put the converted address (and the value above it) on the stack.
void lower_access(Body& b, Reader& r, const Instr& in, bool known = false, bool converted = false) {
  Reader ir(r.data() + in.start, in.end - in.start, r.offset() - r.pos() + in.start);
  size_t op_start = ir.pos();
  ir.u8();
  if (in.op == 0xFD) ir.u32();
  size_t op_end = ir.pos();
  uint32_t align = ir.u32();
  if (align & 0x40) refuse("multi-memory access at byte " + std::to_string(ir.offset()));
  uint64_t offset = ir.u64();
  size_t rest = ir.pos();
  const bool far = offset > 0xFFFFFFFFULL;
  b.used = true;
  Slot v = value_slot(in);
  if (known && !far) {
    if (!converted) b.code.push_back(0xA7);  // i32.wrap_i64
  } else {
    if (v != kSlots) b.local(0x21, v);  // local.set: the value sits above the address
    if (far) b.always_oob(); else b.checked();
    if (v != kSlots) b.local(0x20, v);
  }
  put_bytes(b.code, ir.data() + op_start, op_end - op_start);
  put_u32(b.code, align);
  put_u32(b.code, far ? 0xFFFFFFFFULL : offset);
  put_bytes(b.code, ir.data() + rest, ir.remaining());
}

Bytes lower_body(Reader& r, uint32_t nparams, uint32_t func_no, bool branch) {
  size_t locals_start = r.pos();
  uint32_t groups = r.u32();
  uint64_t nlocals = nparams;
  for (uint32_t i = 0; i < groups; ++i) {
    nlocals += r.u32();
    read_valtype(r);
  }
  size_t locals_end = r.pos();
  if (nlocals + kSlots > 50000) refuse("function " + std::to_string(func_no) + " has too many locals");
  Body b;
  b.branch = branch;
  b.base = static_cast<uint32_t>(nlocals);
  // The last two instructions (original bytes, where their output starts) and the locals whose value was
  // used as an address since the last control instruction: such a value is < 2^32 (a larger one trapped),
  // so a further access through the same, unchanged local needs only the truncation.
  struct Prev {
    uint8_t op = 0;
    uint32_t idx = 0;
    size_t out = 0, start = 0, end = 0;
  } p1, p2;
  std::vector<uint32_t> known;
  auto is_known = [&known](uint32_t l) { return std::find(known.begin(), known.end(), l) != known.end(); };
  auto simple_push = [](uint8_t op) { return op == 0x20 || op == 0x23 || (op >= 0x41 && op <= 0x44); };
  while (!r.eof()) {
    Instr in = decode(r);
    const uint8_t* raw = r.data() + in.start;
    const size_t len = in.end - in.start;
    const size_t out_pos = b.code.size();
    if (in.op == 0xFE) refuse("atomic memory access in function " + std::to_string(func_no));
    if (has_memarg(in)) {
      const bool stores = value_slot(in) != kSlots;
      int64_t addr = -1;  // the local the address was read from, when it is that plain
      if (!stores && p1.op == 0x20) addr = p1.idx;
      if (stores && simple_push(p1.op) && p2.op == 0x20) addr = p2.idx;
      const bool far = access_offset(r, in) > 0xFFFFFFFFULL;
      const bool known_addr = addr >= 0 && !far && is_known(static_cast<uint32_t>(addr));
      if (known_addr && stores) {  // local.get L; <value>  ->  local.get L; i32.wrap_i64; <value>
        b.code.resize(p2.out);
        put_bytes(b.code, r.data() + p2.start, p2.end - p2.start);
        b.code.push_back(0xA7);
        put_bytes(b.code, r.data() + p1.start, p1.end - p1.start);
      }
      lower_access(b, r, in, known_addr, known_addr && stores);
      if (addr >= 0 && !far && !known_addr) known.push_back(static_cast<uint32_t>(addr));
    } else if (in.op == 0x21 || in.op == 0x22) {  // local.set / local.tee: the local's value changes
      known.erase(std::remove(known.begin(), known.end(), in.idx), known.end());
      put_bytes(b.code, raw, len);
    } else if (in.op == 0x03 || in.op == 0x05 || in.op == 0x07 || in.op == 0x0B || in.op == 0x18 ||
               in.op == 0x19) {  // loop, else, catch, end, delegate, catch_all: other paths join here
      known.clear();                // (block, if, try and try_table bodies are entered only from here)
      put_bytes(b.code, raw, len);
    } else if (in.op == 0x3F || in.op == 0x40) {  // memory.size / memory.grow
      if (in.idx != 0) refuse("multi-memory memory.size/grow");
      if (in.op == 0x40) b.saturate();
      put_bytes(b.code, raw, len);
      b.code.push_back(in.op == 0x40 ? 0xAC : 0xAD);  // i64.extend_i32_s (-1 stays -1) / _u
      b.used = true;
    } else if (in.op == 0xFC && in.sub == 8) {  // memory.init d:i64 s:i32 n:i32
      b.local(0x21, kA32);
      b.local(0x21, kB32);
      b.checked();
      b.local(0x20, kB32);
      b.local(0x20, kA32);
      put_bytes(b.code, raw, len);
    } else if (in.op == 0xFC && in.sub == 10) {  // memory.copy d:i64 s:i64 n:i64
      b.local(0x21, kA64);
      b.local(0x21, kB64);
      b.checked();
      b.local(0x20, kB64);
      b.checked();
      b.local(0x20, kA64);
      b.checked();
      put_bytes(b.code, raw, len);
    } else if (in.op == 0xFC && in.sub == 11) {  // memory.fill d:i64 v:i32 n:i64
      b.local(0x21, kA64);
      b.local(0x21, kA32);
      b.checked();
      b.local(0x20, kA32);
      b.local(0x20, kA64);
      b.checked();
      put_bytes(b.code, raw, len);
    } else {
      put_bytes(b.code, raw, len);
    }
    p2 = p1;
    p1 = Prev{in.op, in.idx, out_pos, in.start, in.end};
  }
  Bytes out;
  if (!b.used) {
    put_bytes(out, r.data() + locals_start, r.pos() - locals_start);
    return out;
  }
  const uint32_t nslots = b.v128 ? kSlots : kV128;
  put_u32(out, static_cast<uint64_t>(groups) + nslots);
  {  // the existing local groups, then one group per scratch slot
    Reader lr(r.data() + locals_start, locals_end - locals_start);
    lr.u32();
    put_bytes(out, lr.here(), lr.remaining());
  }
  for (uint32_t s = 0; s < nslots; ++s) {
    put_u32(out, 1);
    out.push_back(kSlotType[s]);
  }
  put_bytes(out, b.code);
  return out;
}

// `i64.const v end` -> `i32.const v end` (v >= 2^32: 0xFFFFFFFF, which lies beyond any 32-bit memory).
void lower_offset_expr(Reader& r, Bytes& out) {
  Instr in = decode(r);
  if (in.op != 0x42) refuse("data segment offset is not an i64.const");
  Instr end = decode(r);
  if (end.op != 0x0B) refuse("data segment offset is not a single constant");
  uint64_t v = static_cast<uint64_t>(in.const_val);
  out.push_back(0x41);
  put_s64(out, v > 0xFFFFFFFFULL ? -1 : static_cast<int32_t>(static_cast<uint32_t>(v)));
  out.push_back(0x0B);
}

}  // namespace

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

Bytes lower_memory64(const uint8_t* data, size_t size, bool branch_checks) {
  Memory64Info info = memory64_info(data, size);
  if (info.memories != 1) refuse("the module has " + std::to_string(info.memories) + " memories (one is lowered)");
  if (info.imported) refuse("the memory is imported");
  if (!(info.flags & 0x04)) refuse("the memory is already 32-bit");
  if (info.flags & ~uint32_t{0x07}) refuse("memory limits flags " + std::to_string(info.flags));
  if (info.min_pages >= kPages32) refuse("the initial memory is 4 GiB or more");
  Module m(data, size);
  std::vector<FuncType> types = read_types(m);
  std::vector<uint32_t> func_types;  // of defined functions
  if (const Section* s = m.find(kFunction)) {
    Reader r = m.reader(*s);
    uint32_t n = r.u32();
    for (uint32_t i = 0; i < n; ++i) {
      uint32_t t = r.u32();
      if (t >= types.size()) r.fail("function type index out of range");
      func_types.push_back(t);
    }
  }
  uint32_t imported_funcs = 0;  // the memory is not imported (refused above)
  for (const Import& im : read_imports(m))
    if (im.kind == 0) ++imported_funcs;

  Bytes out(data, data + 8);
  for (const Section& s : m.sections) {
    Reader r = m.reader(s);
    Bytes p;
    switch (s.id) {
      case kMemory: {
        put_u32(p, 1);
        uint32_t flags = info.flags & ~uint32_t{0x04};
        p.push_back(static_cast<uint8_t>(flags));
        put_u32(p, info.min_pages);
        if (info.has_max) put_u32(p, info.max_pages < kPages32 ? info.max_pages : kPages32);
        break;
      }
      case kCode: {
        uint32_t n = r.u32();
        if (n != func_types.size()) r.fail("function and code section counts differ");
        put_u32(p, n);
        for (uint32_t i = 0; i < n; ++i) {
          uint32_t len = r.u32();
          size_t at = r.offset();
          Reader body(r.take(len), len, at);
          Bytes b = lower_body(body, static_cast<uint32_t>(types[func_types[i]].params.size()),
                               imported_funcs + i, branch_checks);
          put_u32(p, b.size());
          put_bytes(p, b);
        }
        break;
      }
      case kData: {
        uint32_t n = r.u32();
        put_u32(p, n);
        for (uint32_t i = 0; i < n; ++i) {
          uint32_t flags = r.u32();
          put_u32(p, flags);
          if (flags == 2) {
            uint32_t mem = r.u32();
            if (mem != 0) refuse("data segment for memory " + std::to_string(mem));
            put_u32(p, mem);
          }
          if (flags == 0 || flags == 2) lower_offset_expr(r, p);
          else if (flags != 1) r.fail("bad data segment flags");
          uint32_t len = r.u32();
          put_u32(p, len);
          put_bytes(p, r.take(len), len);
        }
        break;
      }
      default:
        put_bytes(out, data + s.start, s.end - s.start);
        continue;
    }
    if (!r.eof() && s.id != kMemory) r.fail("trailing bytes in section " + std::to_string(s.id));
    put_section(out, s.id, p);
  }
  return out;
}

}  // namespace aocu::transform
