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

}  // namespace aocu::transform
