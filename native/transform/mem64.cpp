// memory64 lowering (docs/ABI.md, Module formats): a wasm64 module whose memory can never exceed
// 4 GiB - 64 KiB runs on a 32-bit memory, so wasmtime elides bounds checks with guard pages. Function
// signatures, globals and the in-memory pointer layout stay 64-bit; only the memory's index type changes:
//  - every load/store address is saturated to 32 bits (>= 2^32 -> 0xFFFFFFFF, a select) and a static offset
//    >= 2^32 becomes 0xFFFFFFFF on address 0xFFFFFFFF. The memory is at most 2^32 - 2^16 bytes, so an access
//    the 64-bit run traps on still traps (out of bounds, the same error), and every access that succeeds
//    there touches the same bytes here. Checks are left out where the result is known (lower_body): an address
//    read from a local (or a local plus a constant < 2^16) through which an access already succeeded, with the
//    local unchanged on every path since, is only truncated (else that access trapped); likewise a parameter
//    that every call site passes such a value, in a function only direct calls reach (mem64_calls.cpp); a
//    constant address becomes an i32.const. (`branch_checks` makes the check a branch to a trapping access
//    instead: measured slower.)
//  - memory.size / memory.grow results are extended to i64 (grow's -1 sign-extended); grow's delta is
//    saturated (a delta >= 2^32 fails with -1 as it does on the 64-bit memory);
//  - memory.fill / memory.copy / memory.init operands are converted the same way (an operand >= 2^32 makes
//    d + n exceed the memory, which traps in both runs before anything is written);
//  - active data segment offsets become i32 constants.
// The caller decides when the bound holds (the memory's declared maximum or the instance's memory limit);
// the rewrite itself depends on the module bytes only, so it is cached by content hash.
#include <algorithm>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "transform/mem64.h"
#include "transform/transform.h"
#include "transform/wasm_binary.h"

namespace aocu::transform {

using namespace aocu::wasm;
using mem64::Interproc;
using mem64::Sig;

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
  // i64 address on the stack -> i32: itself when < 2^32, else 0xFFFFFFFF (always out of bounds here), as
  // select(-1, wrap(a), wrap(rotr(a, 32))): the high half is the condition itself, so cranelift emits rorx, test,
  // cmov (4 instructions with the zero extension, 6 for the former select on (a >> 32) == 0, which was
  // 4-5% faster than a < 2^32 since x86 has no compare with a 64-bit immediate).
  void saturate() {
    local(0x21, kT64);  // local.set
    code.push_back(0x41);  // i32.const -1
    put_s64(code, -1);
    local(0x20, kT64);
    code.push_back(0xA7);  // i32.wrap_i64
    local(0x20, kT64);
    code.push_back(0x42);  // i64.const 32
    put_s64(code, 32);
    code.push_back(0x8A);  // i64.rotr
    code.push_back(0xA7);  // i32.wrap_i64: the high half
    code.push_back(0x1B);  // select
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
// the stack is one whose truncation is exact or still out of bounds (lower_body): a truncation suffices.
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

// Operand-stack effect of the instructions a store's value expression or a call's argument may consist of
// (pushes, numeric operators, loads, calls with at most one result; false for anything else, which ends the
// search backwards). Calls cannot change the caller's locals, so they do not disturb what is known.
bool stack_effect(const Instr& in, const Interproc& ip, int& pops, int& pushes) {
  const int op = in.op;
  if (op == 0x10 || op == 0x11) {  // call f / call_indirect t (+ the table index operand)
    const std::vector<Sig>& v = op == 0x10 ? ip.funcs : ip.types;
    if (in.idx >= v.size() || v[in.idx].results > 1) return false;
    pops = static_cast<int>(v[in.idx].params) + (op == 0x11);
    pushes = static_cast<int>(v[in.idx].results);
    return true;
  }
  pushes = 1;
  if (op == 0x20 || op == 0x23 || (op >= 0x41 && op <= 0x44)) pops = 0;  // local/global.get, const
  else if ((op >= 0x28 && op <= 0x35) || op == 0x45 || op == 0x50 || (op >= 0x67 && op <= 0x69) ||
           (op >= 0x79 && op <= 0x7B) || (op >= 0x8B && op <= 0x91) || (op >= 0x99 && op <= 0x9F) ||
           (op >= 0xA7 && op <= 0xC4))
    pops = 1;  // loads, eqz, clz/ctz/popcnt, float unary, conversions, sign extension
  else if ((op >= 0x46 && op <= 0x4F) || (op >= 0x51 && op <= 0x66) || (op >= 0x6A && op <= 0x78) ||
           (op >= 0x7C && op <= 0x8A) || (op >= 0x92 && op <= 0x98) || (op >= 0xA0 && op <= 0xA6))
    pops = 2;  // comparisons and binary arithmetic
  else
    return false;
  return true;
}

// Where a local is set (local.set / local.tee), by instruction index, to ask "is L changed in (s, e)?".
struct LocalSets {
  std::unordered_map<uint32_t, std::vector<size_t>> at;
  bool changed(uint32_t l, size_t s, size_t e) const {
    auto it = at.find(l);
    if (it == at.end()) return false;
    auto p = std::upper_bound(it->second.begin(), it->second.end(), s);
    return p != it->second.end() && *p < e;
  }
};

}  // namespace

Bytes mem64::lower_body(Reader& r, uint32_t func_no, bool branch, Interproc& ip) {
  const uint32_t nparams = ip.funcs[func_no].params;
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
  std::vector<Instr> ins;
  while (!r.eof()) {
    ins.push_back(decode(r));
    if (ins.back().op == 0xFE) refuse("atomic memory access in function " + std::to_string(func_no));
  }
  // Structure: the end matching each block/loop/if/try/try_table, and where each local is set.
  const size_t n = ins.size();
  std::vector<size_t> match(n, SIZE_MAX);  // SIZE_MAX: unmatched (treated as running to the body's end)
  LocalSets sets;
  {
    std::vector<size_t> open;
    for (size_t i = 0; i < n; ++i) {
      const uint8_t op = ins[i].op;
      if (op == 0x02 || op == 0x03 || op == 0x04 || op == 0x06 || op == 0x1F) {
        open.push_back(i);
      } else if ((op == 0x0B || op == 0x18) && !open.empty()) {
        match[open.back()] = i;
        open.pop_back();
      } else if (op == 0x21 || op == 0x22) {
        sets.at[ins[i].idx].push_back(i);
      }
    }
  }
  // `known`: locals whose current value v is < 2^32 - 2^16 or >= 2^64 - 2^16 (an access through v, or through
  // v + c with 0 <= c < 2^16, succeeded: the memory is at most 2^32 - 2^16 bytes). For such v, wrapping v (or
  // v + c, c < 2^16) to 32 bits gives the same address when it is in range and one that still traps when not,
  // so those accesses need only the truncation. At a join point a fact survives when it held where the
  // construct was entered and the local is not set anywhere inside it (then every path carries that value).
  // On entry: the parameters mem64::analyse found every caller passes known.
  std::vector<uint32_t> known;
  for (uint32_t a = 0; a < nparams; ++a)
    if (ip.entry[func_no][a]) known.push_back(a);
  std::vector<bool> get_known(n, false);  // by instruction: a local.get of a local known at that point
  auto is_known = [&known](uint32_t l) { return std::find(known.begin(), known.end(), l) != known.end(); };
  auto keep_unchanged = [&sets](std::vector<uint32_t> k, size_t s, size_t e) {
    k.erase(std::remove_if(k.begin(), k.end(), [&](uint32_t l) { return sets.changed(l, s, e); }), k.end());
    return k;
  };
  // A block's, if's or try_table's end is reached by falling through and by branches to its label: what is
  // known there is what every such path carries (`out`), with the if's implicit else carrying its entry.
  // Frames inside a try_table (whose catch clauses branch from anywhere in it), legacy try frames and bodies
  // with GC branch instructions keep the coarse rule: a fact survives when it held on entry and the local is
  // not set anywhere inside (then every path carries that value).
  struct Frame {
    uint8_t op;
    size_t start, end;
    std::vector<uint32_t> entry;  // `known` where the construct was entered
    std::vector<uint32_t> out;    // known on every path to the end seen so far (`reached`: there is one)
    bool reached = false, coarse = false, has_else = false;
  };
  std::vector<Frame> frames;
  const bool gc_branches = std::any_of(ins.begin(), ins.end(), [](const Instr& x) { return x.op == 0xFB; });
  auto meet = [](Frame& f, const std::vector<uint32_t>& k) {
    if (!f.reached) {
      f.out = k;
      f.reached = true;
      return;
    }
    f.out.erase(std::remove_if(f.out.begin(), f.out.end(),
                               [&](uint32_t l) { return std::find(k.begin(), k.end(), l) == k.end(); }),
                f.out.end());
  };
  auto branch_to = [&](uint32_t depth) {  // a loop's start needs nothing: its entry rule covers back edges
    if (depth < frames.size() && frames[frames.size() - 1 - depth].op != 0x03)
      meet(frames[frames.size() - 1 - depth], known);
  };
  bool dead = false;  // after br, br_table, return, unreachable, throw...: no path falls through to here
  // The last kHist instructions (p[0] the latest): index into `ins` and where their output starts.
  constexpr int kHist = 16;
  struct Prev {
    size_t i = SIZE_MAX, out = 0;
  } p[kHist];
  auto prev_op = [&](int k) -> int { return k >= kHist || p[k].i == SIZE_MAX ? -1 : ins[p[k].i].op; };
  // A store's value expression: the history slot of its first instruction, when the expression is made only
  // of pushes, numeric operators, loads, calls and local.set/tee (no control), else -1; `moved`: the locals
  // it sets (an address read from one of them is that local's old value, whatever is known of the new one).
  std::vector<uint32_t> moved;
  auto value_start = [&]() -> int {
    int need = 1;
    moved.clear();
    for (int k = 0; k < kHist; ++k) {
      int pops = 0, pushes = 0;
      const int op = prev_op(k);
      if (op < 0) return -1;
      if (op == 0x21 || op == 0x22) {
        pops = 1;
        pushes = op == 0x22;
        moved.push_back(ins[p[k].i].idx);
      } else if (!stack_effect(ins[p[k].i], ip, pops, pushes)) {
        return -1;
      }
      need -= pushes;
      if (need < 0) return -1;
      if (need == 0 && pops == 0) return k;
      need += pops;
    }
    return -1;
  };
  // The history slot after the expression that produced the value at slot k (its operands' expressions
  // included), or -1 when it is not made only of instructions stack_effect knows.
  auto skip = [&](int k, auto& self) -> int {
    int pops = 0, pushes = 0;
    if (k < 0 || prev_op(k) < 0 || !stack_effect(ins[p[k].i], ip, pops, pushes) || pushes != 1) return -1;
    int j = k + 1;
    while (pops-- > 0 && j >= 0) j = self(j, self);
    return j;
  };
  // A direct call (during mem64::analyse): which of its arguments are known (a local.get of a known local, or
  // a constant < 2^32 - 2^16 or >= 2^64 - 2^16); the callee's entry facts are what all of its sites pass.
  auto note_call = [&](uint32_t f) {
    if (f >= ip.passed.size() || ip.passed[f].empty()) return;
    const uint32_t na = ip.funcs[f].params;
    std::vector<bool> ok(na, false);
    int k = 0;
    for (uint32_t a = na; a-- > 0 && k >= 0 && k < kHist;) {
      const int op = prev_op(k);
      if (op == 0x20) ok[a] = get_known[p[k].i];
      if (op == 0x42) {
        const uint64_t c = static_cast<uint64_t>(ins[p[k].i].const_val);
        ok[a] = c < 0x100000000ULL - 0x10000 || c >= 0ULL - 0x10000;
      }
      k = skip(k, skip);
    }
    for (uint32_t a = 0; a < na; ++a)
      if (!ok[a]) ip.passed[f][a] = false;
  };
  for (size_t i = 0; i < n; ++i) {
    const Instr& in = ins[i];
    const uint8_t* raw = r.data() + in.start;
    const size_t len = in.end - in.start;
    const size_t out_pos = b.code.size();
    if (in.op == 0x0C || in.op == 0x0D || in.op == 0xD5 || in.op == 0xD6) branch_to(in.idx);  // br, br_if, br_on_*
    if (in.op == 0x0E)
      for (uint32_t t : in.labels) branch_to(t);
    if (has_memarg(in)) {
      const bool stores = value_slot(in) != kSlots;
      // history slot of the instruction that ends the address: the top for loads; below a plain value push
      // for stores (other store values leave the address's producer unknown here)
      // history slot of the instruction that ends the address: the top for loads, below the value for stores
      const int j = stores ? value_start() : -1;
      const int a = stores ? (j >= 0 ? j + 1 : -1) : 0;
      enum { kOther, kLocal, kTee, kConst, kLocalPlus } shape = kOther;
      uint32_t l = 0;
      uint64_t c = 0;
      if (a >= 0 && prev_op(a) >= 0) {
        const Instr& x = ins[p[a].i];
        if (x.op == 0x20 || x.op == 0x22) {
          shape = x.op == 0x20 ? kLocal : kTee;
          l = x.idx;
        } else if (x.op == 0x42) {
          shape = kConst;
          c = static_cast<uint64_t>(x.const_val);
        } else if (x.op == 0x7C && prev_op(a + 1) == 0x42 && prev_op(a + 2) == 0x20 &&
                   static_cast<uint64_t>(ins[p[a + 1].i].const_val) < 0x10000) {  // local.get; i64.const; add
          shape = kLocalPlus;
          l = ins[p[a + 2].i].idx;
        }
      }
      const bool far = access_offset(r, in) > 0xFFFFFFFFULL;
      if (!far && shape == kConst) {  // i64.const c -> i32.const c (c >= 2^32: 0xFFFFFFFF, out of bounds)
        Bytes k32{0x41};
        put_s64(k32, c > 0xFFFFFFFFULL ? -1 : static_cast<int32_t>(static_cast<uint32_t>(c)));
        const size_t from = p[a].out, to = stores ? p[j].out : b.code.size();
        b.code.erase(b.code.begin() + from, b.code.begin() + to);
        b.code.insert(b.code.begin() + from, k32.begin(), k32.end());
        lower_access(b, r, in, true, true);
      } else if (!far && (shape == kLocal || shape == kLocalPlus || (shape == kTee && stores)) && is_known(l) &&
                 (!stores || std::find(moved.begin(), moved.end(), l) == moved.end())) {
        // <address>; <value>  ->  <address>; i32.wrap_i64; <value>. A store's address teed into l: l still holds
        // it (not moved), and the value's own access through l made it known (p->f = p->f | x).
        if (stores) b.code.insert(b.code.begin() + p[j].out, 0xA7);
        lower_access(b, r, in, true, stores);
      } else {
        lower_access(b, r, in);
        if (!far && shape != kOther && shape != kConst && !is_known(l)) known.push_back(l);
      }
    } else if (in.op == 0x21 || in.op == 0x22) {  // local.set / local.tee: the local's value changes
      known.erase(std::remove(known.begin(), known.end(), in.idx), known.end());
      if (prev_op(0) == 0x20 && is_known(ins[p[0].i].idx)) known.push_back(in.idx);  // a copy of a known local
      put_bytes(b.code, raw, len);
    } else if (in.op == 0x02 || in.op == 0x04 || in.op == 0x06 || in.op == 0x1F) {  // entered only from here
      frames.push_back(Frame{in.op, i, match[i], known, {}, false, gc_branches || in.op == 0x06, false});
      if (in.op == 0x1F)
        for (Frame& f : frames) f.coarse = true;
      put_bytes(b.code, raw, len);
    } else if (in.op == 0x03) {  // loop: also entered by branches from inside it
      frames.push_back(Frame{in.op, i, match[i], known, {}, false, true, false});
      known = keep_unchanged(known, i, match[i]);
      put_bytes(b.code, raw, len);
    } else if (in.op == 0x05) {  // else: entered from the `if` only
      if (!frames.empty()) {
        if (!dead) meet(frames.back(), known);
        frames.back().has_else = true;
        known = frames.back().entry;
      } else {
        known.clear();
      }
      put_bytes(b.code, raw, len);
    } else if (in.op == 0x07 || in.op == 0x19) {  // catch, catch_all: entered from anywhere in the try so far
      if (!frames.empty()) known = keep_unchanged(frames.back().entry, frames.back().start, i);
      else known.clear();
      put_bytes(b.code, raw, len);
    } else if (in.op == 0x0B || in.op == 0x18) {  // end, delegate: the paths out of the construct join here
      if (frames.empty()) {
        known.clear();
      } else {
        Frame f = std::move(frames.back());
        frames.pop_back();
        // a loop's end is reached only by falling through its body (branches go to its start)
        if (f.op != 0x03 && f.coarse) {
          known = keep_unchanged(std::move(f.entry), f.start, i);
        } else if (f.op != 0x03) {
          if (!dead) meet(f, known);
          if (f.op == 0x04 && !f.has_else) meet(f, f.entry);
          known = f.reached ? std::move(f.out) : std::vector<uint32_t>{};
        }
      }
      put_bytes(b.code, raw, len);
    } else if (in.op == 0x20) {
      get_known[i] = is_known(in.idx);
      put_bytes(b.code, raw, len);
    } else if (in.op == 0x10 || in.op == 0x12) {  // call, return_call
      note_call(in.idx);
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
    // (after a rewrite above, the positions recorded for the store's value expression are stale; no later
    // lookup reaches past the store, which value_start does not cross)
    switch (in.op) {
      case 0x00: case 0x08: case 0x09: case 0x0A: case 0x0C: case 0x0E: case 0x0F: case 0x12: case 0x13: case 0x15:
        dead = true;  // unreachable, throw, rethrow, throw_ref, br, br_table, return, return_call*
        break;
      case 0x02: case 0x03: case 0x04: case 0x05: case 0x06: case 0x07: case 0x0B: case 0x18: case 0x19: case 0x1F:
        dead = false;  // a new construct or a point other paths lead to
        break;
      default:
        break;
    }
    for (int k = kHist - 1; k > 0; --k) p[k] = p[k - 1];
    p[0] = Prev{i, out_pos};
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

namespace {

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
  Interproc ip = mem64::analyse(m, types, func_types, branch_checks);
  const uint32_t imported_funcs = static_cast<uint32_t>(ip.funcs.size() - func_types.size());

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
          Bytes b = mem64::lower_body(body, imported_funcs + i, branch_checks, ip);
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
