// Linear-memory image encoding for snapshots: only non-zero 64 KiB pages are stored, zstd-compressed.
#pragma once
#include <cstdint>
#include <string>

namespace aocu::engine {

constexpr size_t kWasmPage = 65536;

// Layout: "AOMI" u32 version=1 | u64 byte size | u64 page count | bitmap (1 bit/page, set = stored) |
// zstd frame holding the stored pages in order.
std::string encode_memory(const uint8_t* mem, size_t size, int level = 3);
// Size in bytes recorded in an encoded image (SnapshotDataError if malformed).
uint64_t encoded_memory_size(const std::string& img);
// Writes the image into `mem` (which must hold at least the recorded size). Pages absent from the image
// are zeroed only if `zero_absent` (a fresh, grown memory is already zero beyond its initial size).
void decode_memory(const std::string& img, uint8_t* mem, size_t mem_size, size_t zero_below);

}  // namespace aocu::engine
