// Minimal WebAssembly binary reader/writer for load-time transforms (metering, legacy-EH translation):
// LEB128, sections, function types, and an instruction decoder that knows the immediates of every opcode
// the transforms may meet (MVP, sign-ext, multi-value, reference types, tail calls, typed function
// references, legacy + exnref exceptions, 0xFC bulk/saturating, 0xFD SIMD incl. relaxed, 0xFE threads,
// memory64 and multi-memory memargs). Errors are thrown as aocu::wasm::Error with the byte offset.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace aocu::wasm {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using Bytes = std::vector<uint8_t>;

class Reader {
 public:
  // `origin` is the offset of `p` inside the whole module, for error messages.
  Reader(const uint8_t* p, size_t n, size_t origin = 0) : p_(p), n_(n), origin_(origin) {}
  bool eof() const { return i_ >= n_; }
  size_t pos() const { return i_; }
  size_t offset() const { return origin_ + i_; }
  size_t remaining() const { return n_ - i_; }
  const uint8_t* here() const { return p_ + i_; }
  const uint8_t* data() const { return p_; }
  uint8_t u8();
  uint8_t peek() const;
  uint32_t u32();
  uint64_t u64();
  int32_t s32();
  int64_t s64();
  int64_t s33();
  const uint8_t* take(size_t n);
  std::string name();
  [[noreturn]] void fail(const std::string& what) const;

 private:
  uint64_t uleb(int max_bits);
  int64_t sleb(int bits);
  const uint8_t* p_;
  size_t n_;
  size_t i_ = 0;
  size_t origin_;
};

void put_u32(Bytes& out, uint64_t v);  // unsigned LEB128 (minimal)
void put_s64(Bytes& out, int64_t v);   // signed LEB128 (minimal)
void put_bytes(Bytes& out, const uint8_t* p, size_t n);
inline void put_bytes(Bytes& out, const Bytes& b) { put_bytes(out, b.data(), b.size()); }
void put_name(Bytes& out, const std::string& s);
// Appends a section: id, LEB size, payload.
void put_section(Bytes& out, uint8_t id, const Bytes& payload);

// A value type, kept in its encoded form (1 byte, or 0x63/0x64 + heap type).
using ValType = Bytes;
ValType read_valtype(Reader& r);

struct FuncType {
  std::vector<ValType> params, results;
  bool operator==(const FuncType& o) const { return params == o.params && results == o.results; }
};
FuncType read_functype_body(Reader& r);  // after the 0x60 form byte
void put_functype(Bytes& out, const FuncType& t);

// Block type: empty (0x40), a single value type, or a type index.
struct BlockType {
  enum Kind { Empty, Value, Index } kind = Empty;
  ValType val;
  uint32_t index = 0;
};
BlockType read_blocktype(Reader& r);
void put_blocktype(Bytes& out, const BlockType& bt);

struct Section {
  uint8_t id;
  size_t start;        // offset of the id byte in the module
  size_t end;          // offset just past the payload
  size_t payload;      // offset of the payload
  size_t payload_len;
};

struct Module {
  const uint8_t* data;
  size_t size;
  std::vector<Section> sections;
  // Parses the header and the section framing (contents are left to the transforms).
  Module(const uint8_t* p, size_t n);
  const Section* find(uint8_t id) const;
  Reader reader(const Section& s) const { return Reader(data + s.payload, s.payload_len, s.payload); }
};

// Section ids.
enum : uint8_t {
  kCustom = 0, kType = 1, kImport = 2, kFunction = 3, kTable = 4, kMemory = 5, kGlobal = 6, kExport = 7,
  kStart = 8, kElement = 9, kCode = 10, kData = 11, kDataCount = 12, kTag = 13
};
// Position of a section id in the required order (tag sits between memory and global).
int section_order(uint8_t id);

// Reads limits (flags, min, optional max) of a table or memory.
void skip_limits(Reader& r);

// Decoded instruction. `op` is the first byte; for prefixed opcodes `sub` is the LEB sub-opcode.
struct Instr {
  uint8_t op = 0;
  uint32_t sub = 0;
  size_t start = 0, end = 0;  // byte range in the body reader
  BlockType bt;               // block, loop, if, try, try_table
  uint32_t idx = 0;           // label (br, br_if, rethrow, delegate), function (call), tag (throw, catch)
  std::vector<uint32_t> labels;  // br_table targets (default last)
  int64_t const_val = 0;      // i32.const / i64.const
};
// Decodes the next instruction. Throws on unknown or malformed opcodes.
Instr decode(Reader& r);

// The types of the module's type section (plain function types only; GC types are refused).
std::vector<FuncType> read_types(const Module& m);

// One entry of the import section: kind 0 function, 1 table, 2 memory, 3 global, 4 tag; `type` is the type
// index of a function or tag (the limits and value types of the others are read past).
struct Import {
  std::string module, field;
  uint8_t kind = 0;
  uint32_t type = 0;
};
// The import section's entries in order (none when the module has no import section).
std::vector<Import> read_imports(const Module& m);

}  // namespace aocu::wasm
