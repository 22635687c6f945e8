// Load-time binary transforms of wasm modules (no Python types; errors are aocu::wasm::Error).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace aocu::transform {

// True if any function body uses a legacy exception-handling opcode (try, catch, rethrow, delegate,
// catch_all). `throw` alone is valid in the standardized form and does not count.
bool has_legacy_eh(const uint8_t* wasm, size_t size);

// Translates legacy exception handling to try_table/throw_ref/exnref (see docs/ABI.md). Modules without
// legacy opcodes are returned unchanged.
std::vector<uint8_t> translate_legacy_eh(const uint8_t* wasm, size_t size);

// The @permaweb/wasm-metering rewrite (see docs/ABI.md): `i64` selects the meter type (wasm64 format) over i32.
std::vector<uint8_t> meter(const uint8_t* wasm, size_t size, bool i64);

// The module's memories: `memory64` is true when it has exactly one memory, defined (not imported), with
// a 64-bit index type. `flags`/`min_pages`/`max_pages` describe the first defined memory.
struct Memory64Info {
  uint32_t memories = 0, flags = 0;
  bool imported = false, memory64 = false, has_max = false;
  uint64_t min_pages = 0, max_pages = 0;
};
Memory64Info memory64_info(const uint8_t* wasm, size_t size);

// memory64 lowering (mem64.cpp): the same module on a 32-bit memory, exact as long as the memory never
// exceeds 65535 pages (4 GiB - 64 KiB), which the caller guarantees (declared maximum or memory limit).
// `branch_checks`: the high-half check of each address is a branch to a trapping access (else a select that
// saturates the address to 0xFFFFFFFF); both are exact, they differ only in speed.
std::vector<uint8_t> lower_memory64(const uint8_t* wasm, size_t size, bool branch_checks = false);

}  // namespace aocu::transform
