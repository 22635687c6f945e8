// Legacy exception handling (try/catch/catch_all/rethrow/delegate) -> standardized exnref form
// (try_table/throw_ref), following docs/ABI.md. Shape of the output:
//
//   try bt B catch t1 H1 .. catch_all Hk end
//     =>  block bt                                   ;; $o: the old try label (branches to it land here)
//           block [P]->[Tk]  ..  block [P]->[T1]      ;; one handler block per clause, first clause innermost
//             try_table bt (catch t1 0) .. (catch_all k-1)
//               B
//             end
//             br $o
//           end  H1  br $o   ..   end  Hk
//         end
//   try bt B delegate l
//     =>  block bt  block [P]->[exnref]  try_table bt (catch_all_ref 0)  B  end  br 1  end
//         br $dX  end                                ;; $dX: see below
//
// A delegate must rethrow "in the scope of label l": the exception goes to the handlers of the nearest try,
// at or outside l, whose body (not handler) encloses the delegate, or to the caller. That target gets a
// block $dX [P]->[exnref] just inside its try_table (or around the whole function body) followed by
// `throw_ref`, and the delegate branches there with the exnref, leaving every try_table in between.
// Handlers that are the target of `rethrow` use catch_ref/catch_all_ref and keep the exnref in a new local;
// `rethrow n` becomes `local.get $exn; throw_ref`. Every other branch depth is recomputed from a map of old
// labels to new blocks. `throw` and tags are unchanged. A pre-pass per function finds delegate targets and
// rethrown handlers, because both need code emitted before the use is seen.
#include <string>

#include "transform/transform.h"
#include "transform/wasm_binary.h"

namespace aocu::transform {

using namespace aocu::wasm;

namespace {

bool is_legacy_op(uint8_t op) { return op == 0x06 || op == 0x07 || op == 0x09 || op == 0x18 || op == 0x19; }

struct Handler {
  bool all = false;  // catch_all
  uint32_t tag = 0;
  bool ref = false;  // needs the exnref (target of a rethrow)
};

struct TryInfo {
  BlockType bt;
  std::vector<Handler> handlers;
  bool delegates = false;    // try .. delegate
  bool needs_dblock = false;  // target of some delegate
  uint32_t exn_local = 0;    // valid if any handler has ref
  bool any_ref() const {
    for (auto& h : handlers)
      if (h.ref) return true;
    return false;
  }
};

enum class Kind { Func, Block, Loop, If, Try };

struct Frame {
  Kind kind;
  int try_id = -1;
  bool in_handler = false;
  size_t handler = 0;
  // Main pass: index in the new block stack that branches to this label target, and the $dX block.
  size_t target = 0;
  size_t dblock = 0;
  size_t handlers = 0;  // number of handler blocks opened for this try
};

struct ModuleCtx {
  std::vector<FuncType> types;
  std::vector<FuncType> added;  // new types, appended after `types`
  std::vector<uint32_t> tag_types;
  std::vector<uint32_t> func_types;  // defined functions only

  const FuncType& type(uint32_t idx, Reader& r) const {
    if (idx < types.size()) return types[idx];
    if (idx - types.size() < added.size()) return added[idx - types.size()];
    r.fail("type index " + std::to_string(idx) + " out of range");
  }
  void sig(const BlockType& bt, Reader& r, std::vector<ValType>& p, std::vector<ValType>& q) const {
    p.clear();
    q.clear();
    if (bt.kind == BlockType::Value) q.push_back(bt.val);
    if (bt.kind == BlockType::Index) {
      const FuncType& t = type(bt.index, r);
      p = t.params;
      q = t.results;
    }
  }
  BlockType make_bt(const std::vector<ValType>& p, const std::vector<ValType>& q) {
    BlockType bt;
    if (p.empty() && q.empty()) return bt;
    if (p.empty() && q.size() == 1) {
      bt.kind = BlockType::Value;
      bt.val = q[0];
      return bt;
    }
    FuncType ft{p, q};
    bt.kind = BlockType::Index;
    for (size_t i = 0; i < types.size(); ++i)
      if (types[i] == ft) {
        bt.index = static_cast<uint32_t>(i);
        return bt;
      }
    for (size_t i = 0; i < added.size(); ++i)
      if (added[i] == ft) {
        bt.index = static_cast<uint32_t>(types.size() + i);
        return bt;
      }
    added.push_back(ft);
    bt.index = static_cast<uint32_t>(types.size() + added.size() - 1);
    return bt;
  }
  const std::vector<ValType>& tag_params(uint32_t tag, Reader& r) const {
    if (tag >= tag_types.size()) r.fail("tag index " + std::to_string(tag) + " out of range");
    return type(tag_types[tag], r).params;
  }
};

const ValType kExnRef{0x69};

// Nearest enclosing try in body state at or outside frames[j]; -1 = the caller (function level).
int delegate_target(const std::vector<Frame>& frames, long j) {
  for (; j >= 1; --j)
    if (frames[j].kind == Kind::Try && !frames[j].in_handler) return static_cast<int>(j);
  return -1;
}

class FunctionTranslator {
 public:
  FunctionTranslator(ModuleCtx& ctx, uint32_t func_no, uint32_t nparams) : ctx_(ctx), func_no_(func_no), nparams_(nparams) {}

  // Returns false if the body has no legacy opcode (then it is copied unchanged).
  bool prepass(Reader r) {
    skip_locals(r);
    std::vector<Frame> frames{{Kind::Func}};
    bool legacy = false, mixed = false;
    while (!r.eof()) {
      Instr in = decode(r);
      if (frames.empty()) r.fail("code after the end of function " + std::to_string(func_no_));
      switch (in.op) {
        case 0x02: frames.push_back({Kind::Block}); break;
        case 0x03: frames.push_back({Kind::Loop}); break;
        case 0x04: frames.push_back({Kind::If}); break;
        case 0x1F:
          mixed = true;
          frames.push_back({Kind::Block});
          break;
        case 0x05:
          if (frames.back().kind != Kind::If) r.fail("else without if");
          break;
        case 0x06: {
          legacy = true;
          Frame f{Kind::Try};
          f.try_id = static_cast<int>(tries_.size());
          tries_.push_back(TryInfo{in.bt, {}, false, false, 0});
          frames.push_back(f);
          break;
        }
        case 0x07:
        case 0x19: {
          legacy = true;
          Frame& f = frames.back();
          if (f.kind != Kind::Try) r.fail("catch outside try");
          TryInfo& t = tries_[f.try_id];
          if (!t.handlers.empty() && t.handlers.back().all) r.fail("catch after catch_all");
          t.handlers.push_back(Handler{in.op == 0x19, in.idx, false});
          ctx_.tag_params(in.idx, r);  // validates the tag index
          f.in_handler = true;
          f.handler = t.handlers.size() - 1;
          break;
        }
        case 0x09: {
          legacy = true;
          if (in.idx >= frames.size()) r.fail("rethrow depth out of range");
          Frame& f = frames[frames.size() - 1 - in.idx];
          if (f.kind != Kind::Try || !f.in_handler) r.fail("rethrow target is not a catch");
          tries_[f.try_id].handlers[f.handler].ref = true;
          break;
        }
        case 0x18: {
          legacy = true;
          Frame& f = frames.back();
          if (f.kind != Kind::Try || f.in_handler) r.fail("delegate outside a try body");
          tries_[f.try_id].delegates = true;
          if (in.idx + 1 >= frames.size()) r.fail("delegate depth out of range");
          int tgt = delegate_target(frames, static_cast<long>(frames.size()) - 2 - in.idx);
          if (tgt < 0)
            func_dblock_ = true;
          else
            tries_[frames[tgt].try_id].needs_dblock = true;
          frames.pop_back();
          break;
        }
        case 0x0B:
          frames.pop_back();
          break;
        default:
          break;
      }
    }
    if (!frames.empty()) r.fail("function " + std::to_string(func_no_) + " is missing its end");
    if (legacy && mixed) r.fail("function " + std::to_string(func_no_) + " mixes try_table with legacy exception handling");
    return legacy;
  }

  Bytes translate(Reader r) {
    // Locals: the original groups plus one exnref group for rethrown handlers.
    size_t start = r.pos();
    uint32_t groups = r.u32();
    uint64_t nlocals = nparams_;
    for (uint32_t i = 0; i < groups; ++i) {
      nlocals += r.u32();
      read_valtype(r);
    }
    uint32_t extra = 0;
    for (auto& t : tries_)
      if (t.any_ref()) t.exn_local = static_cast<uint32_t>(nlocals + extra++);
    if (nlocals + extra > 50000) r.fail("too many locals");
    Bytes out;
    if (extra) {
      put_u32(out, static_cast<uint64_t>(groups) + 1);
      put_bytes(out, r.data() + start + leb_len(r.data() + start), r.pos() - start - leb_len(r.data() + start));
      put_u32(out, extra);
      put_bytes(out, kExnRef);
    } else {
      put_bytes(out, r.data() + start, r.pos() - start);
    }

    out_ = &out;
    nsize_ = 1;  // the function's own label
    frames_.assign(1, Frame{Kind::Func});
    frames_[0].target = 0;
    if (func_dblock_) {
      open_block(ctx_.make_bt({}, {kExnRef}));
      func_dblock_index_ = nsize_ - 1;
    }
    int next_try = 0;
    std::vector<ValType> P, R;
    while (!r.eof()) {
      Instr in = decode(r);
      switch (in.op) {
        case 0x02:
        case 0x03:
        case 0x04: {
          copy(r, in);
          Frame f{in.op == 0x02 ? Kind::Block : in.op == 0x03 ? Kind::Loop : Kind::If};
          f.target = nsize_++;
          frames_.push_back(f);
          break;
        }
        case 0x06: {
          TryInfo& t = tries_[next_try];
          Frame f{Kind::Try};
          f.try_id = next_try++;
          ctx_.sig(t.bt, r, P, R);
          emit_block(0x02, t.bt);
          f.target = nsize_++;
          std::vector<Handler> hs = t.handlers;
          if (t.delegates) hs.assign(1, Handler{true, 0, true});
          // Handler blocks, last clause outermost.
          for (size_t i = hs.size(); i-- > 0;) {
            std::vector<ValType> q;
            if (!hs[i].all) q = ctx_.tag_params(hs[i].tag, r);
            if (hs[i].ref) q.push_back(kExnRef);
            open_block(ctx_.make_bt(P, q));
          }
          f.handlers = hs.size();
          emit_block(0x1F, t.bt);
          put_u32(*out_, hs.size());
          for (size_t i = 0; i < hs.size(); ++i) {
            uint8_t kind = static_cast<uint8_t>((hs[i].all ? 2 : 0) + (hs[i].ref ? 1 : 0));
            out_->push_back(kind);
            if (!hs[i].all) put_u32(*out_, hs[i].tag);
            put_u32(*out_, i);
          }
          ++nsize_;
          if (t.needs_dblock) {
            open_block(ctx_.make_bt(P, {kExnRef}));
            f.dblock = nsize_ - 1;
          }
          frames_.push_back(f);
          break;
        }
        case 0x07:
        case 0x19: {
          Frame& f = frames_.back();
          const TryInfo& t = tries_[f.try_id];
          size_t h = 0;
          if (!f.in_handler) {
            close_try_body(t);
          } else {
            br_to(f.target);
            end_block();  // the next handler block: its payload is now on the stack
            h = f.handler + 1;
          }
          f.in_handler = true;
          f.handler = h;
          if (t.handlers[f.handler].ref) {
            out_->push_back(0x21);
            put_u32(*out_, t.exn_local);
          }
          break;
        }
        case 0x09: {
          const Frame& f = frames_[frames_.size() - 1 - in.idx];
          out_->push_back(0x20);
          put_u32(*out_, tries_[f.try_id].exn_local);
          out_->push_back(0x0A);
          break;
        }
        case 0x18: {
          Frame f = frames_.back();
          const TryInfo& t = tries_[f.try_id];
          close_try_body(t);     // now inside the catch_all_ref block, then the exnref is on the stack
          int tgt = delegate_target(frames_, static_cast<long>(frames_.size()) - 2 - in.idx);
          size_t dest = tgt < 0 ? func_dblock_index_ : frames_[tgt].dblock;
          br_to(dest);
          end_block();  // $o
          frames_.pop_back();
          break;
        }
        case 0x0B: {
          Frame f = frames_.back();
          if (f.kind == Kind::Try) {
            const TryInfo& t = tries_[f.try_id];
            if (!f.in_handler) close_try_body(t);  // try without handlers
            end_block();                          // $o
          } else if (f.kind == Kind::Func) {
            if (func_dblock_) {
              out_->push_back(0x0F);  // return the body's results
              end_block();
              out_->push_back(0x0A);
            }
            out_->push_back(0x0B);
          } else {
            copy(r, in);
            --nsize_;
          }
          frames_.pop_back();
          break;
        }
        case 0x0C:
        case 0x0D:
        case 0xD5:
        case 0xD6:
          out_->push_back(in.op);
          put_u32(*out_, remap(in.idx, r));
          break;
        case 0x0E:
          out_->push_back(0x0E);
          put_u32(*out_, in.labels.size() - 1);
          for (uint32_t l : in.labels) put_u32(*out_, remap(l, r));
          break;
        default:
          copy(r, in);
      }
    }
    return out;
  }

 private:
  static size_t leb_len(const uint8_t* p) {
    size_t n = 1;
    while (*p++ & 0x80) ++n;
    return n;
  }
  static void skip_locals(Reader& r) {
    uint32_t groups = r.u32();
    for (uint32_t i = 0; i < groups; ++i) {
      r.u32();
      read_valtype(r);
    }
  }

  void copy(const Reader& r, const Instr& in) { put_bytes(*out_, r.data() + in.start, in.end - in.start); }
  void emit_block(uint8_t op, const BlockType& bt) {
    out_->push_back(op);
    put_blocktype(*out_, bt);
  }
  void open_block(const BlockType& bt) {
    emit_block(0x02, bt);
    ++nsize_;
  }
  void end_block() {
    out_->push_back(0x0B);
    --nsize_;
  }
  void br_to(size_t index) {
    out_->push_back(0x0C);
    put_u32(*out_, nsize_ - 1 - index);
  }
  uint32_t remap(uint32_t depth, Reader& r) {
    if (depth >= frames_.size()) r.fail("branch depth out of range");
    return static_cast<uint32_t>(nsize_ - 1 - frames_[frames_.size() - 1 - depth].target);
  }
  // Ends the try_table of a try body: leaves the $dX block (if any) with the body's results, rethrows what
  // reached $dX, closes try_table and branches to $o. Afterwards the innermost handler block is open.
  void close_try_body(const TryInfo& t) {
    Frame& f = frames_.back();
    if (t.needs_dblock) {
      br_to(f.dblock - 1);  // the try_table
      end_block();
      out_->push_back(0x0A);  // throw_ref inside the try_table
    }
    end_block();  // try_table
    br_to(f.target);
    if (f.handlers) end_block();  // innermost handler block: its payload is now on the stack
  }

  ModuleCtx& ctx_;
  uint32_t func_no_, nparams_;
  std::vector<TryInfo> tries_;
  bool func_dblock_ = false;
  size_t func_dblock_index_ = 0;
  Bytes* out_ = nullptr;
  size_t nsize_ = 0;
  std::vector<Frame> frames_;
};

}  // namespace

bool has_legacy_eh(const uint8_t* data, size_t size) {
  Module m(data, size);
  const Section* s = m.find(kCode);
  if (!s) return false;
  Reader r = m.reader(*s);
  uint32_t n = r.u32();
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t len = r.u32();
    size_t at = r.offset();
    Reader b(r.take(len), len, at);
    uint32_t groups = b.u32();
    for (uint32_t g = 0; g < groups; ++g) {
      b.u32();
      read_valtype(b);
    }
    while (!b.eof())
      if (is_legacy_op(decode(b).op)) return true;
  }
  return false;
}

std::vector<uint8_t> translate_legacy_eh(const uint8_t* data, size_t size) {
  Module m(data, size);
  const Section* code = m.find(kCode);
  if (!code) return Bytes(data, data + size);

  ModuleCtx ctx;
  ctx.types = read_types(m);
  uint32_t imported_funcs = 0;
  for (const Import& im : read_imports(m)) {
    if (im.kind == 0) ++imported_funcs;
    if (im.kind == 4) ctx.tag_types.push_back(im.type);
  }
  if (const Section* s = m.find(kTag)) {
    Reader r = m.reader(*s);
    uint32_t n = r.u32();
    for (uint32_t i = 0; i < n; ++i) {
      if (r.u8() != 0) r.fail("bad tag attribute");
      ctx.tag_types.push_back(r.u32());
    }
  }
  if (const Section* s = m.find(kFunction)) {
    Reader r = m.reader(*s);
    uint32_t n = r.u32();
    for (uint32_t i = 0; i < n; ++i) ctx.func_types.push_back(r.u32());
  }

  Reader r = m.reader(*code);
  uint32_t n = r.u32();
  if (n != ctx.func_types.size()) r.fail("function and code section counts differ");
  Bytes code_payload;
  put_u32(code_payload, n);
  bool changed = false;
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t len = r.u32();
    size_t at = r.offset();
    const uint8_t* body = r.take(len);
    uint32_t tidx = ctx.func_types[i];
    if (tidx >= ctx.types.size()) r.fail("function type index out of range");
    FunctionTranslator ft(ctx, imported_funcs + i, static_cast<uint32_t>(ctx.types[tidx].params.size()));
    if (!ft.prepass(Reader(body, len, at))) {
      put_u32(code_payload, len);
      put_bytes(code_payload, body, len);
      continue;
    }
    changed = true;
    Bytes b = ft.translate(Reader(body, len, at));
    put_u32(code_payload, b.size());
    put_bytes(code_payload, b);
  }
  if (!changed) return Bytes(data, data + size);

  Bytes out(data, data + 8);
  bool wrote_types = false;
  auto put_types = [&]() {
    Bytes p;
    put_u32(p, ctx.types.size() + ctx.added.size());
    if (const Section* s = m.find(kType)) {
      Reader tr = m.reader(*s);
      tr.u32();
      put_bytes(p, tr.here(), tr.remaining());
    }
    for (auto& t : ctx.added) put_functype(p, t);
    put_section(out, kType, p);
    wrote_types = true;
  };
  for (const Section& s : m.sections) {
    if (s.id != kCustom && !wrote_types && !ctx.added.empty() && section_order(s.id) >= section_order(kType)) {
      put_types();
      if (s.id == kType) continue;
    }
    if (s.id == kType && !ctx.added.empty()) continue;
    if (s.id == kCode) {
      put_section(out, kCode, code_payload);
    } else {
      put_bytes(out, data + s.start, s.end - s.start);
    }
  }
  return out;
}

}  // namespace aocu::transform
