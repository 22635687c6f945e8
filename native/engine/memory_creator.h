// aocu's wasmtime linear-memory creator and raw page images mapped copy-on-write into it.
//
// Every linear memory of the engine is an mmap reservation we own (PROT_NONE guard | memory | guard),
// so restoring a snapshot can replace the memory's pages with a MAP_PRIVATE mapping of a raw page image
// (a sealed memfd or a file) instead of decompressing and writing them: the kernel then shares the image's
// pages until the instance writes one, and the write copies only that page.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "wasmtime_api.h"

namespace aocu::engine {

// Installs the creator into an engine config (engine.cpp, once).
void install_memory_creator(wasm_config_t* c);
// True when [base, base+len) is inside the accessible part of a memory made by the creator.
bool creator_owns(const uint8_t* base, size_t len);

using PageDigest = std::array<uint8_t, 32>;

// An immutable raw image of a linear memory (mem_size bytes, 64 KiB pages) with the page-Merkle leaf
// digests of its pages (native/merkle.h), either in a sealed memfd (built from a snapshot) or in a file.
//
// File form ("AOPI" version 1), written by write_file():
//   "AOPI" | u32 version | u64 mem_size | u64 meta_len | meta (opaque, the caller's) |
//   leaf digests (32 bytes x pages) | SHA-256 of everything before it | zero padding to 4096 | pages
// The pages start at a 4 KiB-aligned offset so they can be mapped; all-zero pages are holes (sparse file).
class PageImage {
 public:
  ~PageImage();
  PageImage(const PageImage&) = delete;
  PageImage& operator=(const PageImage&) = delete;

  // From a snapshot.h encoded image: decoded once into a sealed memfd (absent pages stay holes).
  static std::shared_ptr<PageImage> from_encoded(const std::string& encoded);
  // From raw bytes (a live memory): copied once into a sealed memfd. `leaves`, when given, are the page
  // digests of exactly these bytes (a page-Merkle commit just taken), which saves hashing them again.
  static std::shared_ptr<PageImage> from_memory(const uint8_t* mem, size_t size,
                                                const std::vector<PageDigest>* leaves = nullptr);
  // Opens a file written by write_file(). Always checks the structure (magic, version, sizes, exact
  // file length, header digest); `verify` also hashes every page against its leaf digest (a full read,
  // once). SnapshotDataError (one line) on any mismatch.
  static std::shared_ptr<PageImage> open(const std::string& path, bool verify);

  // Writes the file form (temporary file, fsync, rename) with `meta` in the header.
  void write_file(const std::string& path, const std::string& meta) const;

  uint64_t size() const { return size_; }
  const std::vector<PageDigest>& leaves() const { return leaves_; }
  const std::string& meta() const { return meta_; }
  bool file_backed() const { return file_backed_; }
  // Page-Merkle root of the image (same definition as merkle::full_root over its bytes).
  PageDigest root() const;
  // Read-only view of the image's bytes (a shared mapping kept for the image's lifetime).
  const uint8_t* data() const { return view_; }

  // Replaces [base, base+size()) with a private copy-on-write mapping of the image. `base` must be a
  // creator-owned memory (creator_owns) of at least size() accessible bytes.
  void map_into(uint8_t* base) const;

 private:
  PageImage() = default;
  void finish_view();  // maps view_ and computes leaves_ when empty
  int fd_ = -1;
  uint64_t off_ = 0;  // offset of the pages in fd_
  uint64_t size_ = 0;
  bool file_backed_ = false;
  const uint8_t* view_ = nullptr;
  std::vector<PageDigest> leaves_;
  std::string meta_;
};

}  // namespace aocu::engine
