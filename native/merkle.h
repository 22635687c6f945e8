// Page-Merkle commitment over a linear-memory buffer (64 KiB pages) that rehashes only pages written since
// the previous commitment. Plain C++ (no Python types) so the engine can use it directly.
//
// Commitment definition (version 1):
//   leaf_i = SHA-256(0x00 || bytes of page i)            page i = buf[i*65536, min((i+1)*65536, len))
//   node   = SHA-256(0x01 || left || right)
//   Levels are built bottom-up; a level with an odd number of nodes promotes its last node unchanged to the
//   next level (no duplication, no padding hashes), until one node remains (top; 32 zero bytes if len == 0).
//   root   = SHA-256(0x02 || u64le(len in bytes) || top)
// The 0x00/0x01/0x02 prefixes separate leaves, inner nodes and the root, so no page can pose as a subtree
// and buffers of different lengths never share a root.
//
// Dirty detection (measured on the target machine type, kernel 6.x without CONFIG_MEM_SOFT_DIRTY):
//   * soft-dirty bits (/proc/self/pagemap bit 55) are not available there (bit never set), and clear_refs
//     would clear the bits of the whole process, which breaks several independent users;
//   * userfaultfd write-protect in WP_ASYNC mode + the PAGEMAP_SCAN ioctl (Linux >= 6.7) reports exactly the
//     4 KiB pages written since the last scan and re-protects them atomically, per registered range (so
//     independent instances never interfere), with no fault delivered to user space (writers never block).
//     A scan of 64 MiB costs about 25 us; the price is a kernel-handled minor fault (~1 us) on the first
//     write to each 4 KiB page after a commit, paid by the writer. Pages dropped by madvise(DONTNEED) or
//     made accessible by growth are reported as written, and a range whose mapping was replaced (or a forked
//     child, which does not inherit the registration) fails the scan (PM_SCAN_CHECK_WPASYNC), which we
//     treat as "everything dirty".
//   * fallback, used when the above is unavailable (older kernel, unaligned buffer, range already
//     registered by another instance): compare each page with a shadow copy (memcmp, ~10 GB/s),
//     which is exact.
// Contract: commit() must not run concurrently with writers of the buffer (the engine commits between
// calls); writes made during a commit are reported by the next one. The object itself is thread-safe
// (Python releases the GIL while committing).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "hash.h"

namespace aocu::merkle {

constexpr size_t kPageSize = 65536;
using Digest = aocu::hash::Digest32;

// Root of `len` bytes at `data`, computed from scratch (verification / reference).
Digest full_root(const uint8_t* data, size_t len);
// Leaf digest of one page (n <= kPageSize bytes) and the root over a buffer of `len` bytes from its leaves
// (copy-on-write page images keep their leaves, native/engine/memory_creator.h).
Digest leaf_digest(const uint8_t* p, size_t n);
Digest root_from_leaves(size_t len, const std::vector<Digest>& leaves);

class PageMerkle {
 public:
  enum class Method { Auto, Uffd, Shadow };
  explicit PageMerkle(Method preferred = Method::Auto);
  ~PageMerkle();
  PageMerkle(const PageMerkle&) = delete;
  PageMerkle& operator=(const PageMerkle&) = delete;

  // Commit to the current contents of [data, data+len). The first call (or one after reset(), a base
  // address change or a shrink) hashes everything; later calls rehash only pages written since.
  Digest commit(const uint8_t* data, size_t len);
  Digest root() const {
    std::lock_guard<std::mutex> g(mu_);
    return root_;
  }
  size_t page_count() const {
    std::lock_guard<std::mutex> g(mu_);
    return levels_.empty() ? 0 : levels_[0].size();
  }
  bool has_root() const {
    std::lock_guard<std::mutex> g(mu_);
    return committed_;
  }
  // Forget all state (the next commit hashes everything).
  void reset();
  // Adopt `leaves` (the leaf digests of [data, data+len) as it is now) as committed, where [data, data+len)
  // is a private copy-on-write mapping of a page image just made (native/engine/memory_creator.h) and the
  // caller guarantees the leaves are the image's. Costs nothing now: the next commit finds the pages written
  // since in one PAGEMAP_SCAN (a written page of such a mapping is an anonymous copy, an unwritten one is
  // the image's page or not present), rehashes only those and then tracks writes as usual. Without
  // PAGEMAP_SCAN that commit hashes everything (still exact).
  Digest seed(const uint8_t* data, size_t len, const std::vector<Digest>& leaves);
  // "uffd-wp" or "shadow": the method in use after the last commit ("none" before the first).
  const char* method() const;
  // Leaf digests as of the last commit (empty before the first).
  std::vector<Digest> leaves() const {
    std::lock_guard<std::mutex> g(mu_);
    return levels_.empty() ? std::vector<Digest>{} : levels_[0];
  }
  // Pages rehashed by the last commit (for tests and benchmarks).
  size_t last_rehashed() const {
    std::lock_guard<std::mutex> g(mu_);
    return last_rehashed_;
  }

 private:
  struct Tracker;
  void reset_locked();
  void rebuild_tree(const std::vector<size_t>& dirty_leaves);
  void full_hash(const uint8_t* data, size_t len);

  mutable std::mutex mu_;
  Method preferred_;
  std::unique_ptr<Tracker> tracker_;
  const uint8_t* base_ = nullptr;
  size_t len_ = 0;
  bool committed_ = false;
  std::vector<std::vector<Digest>> levels_;  // levels_[0] = leaves
  Digest root_{};
  std::vector<uint8_t> shadow_;  // Shadow method only
  bool using_uffd_ = false;
  bool cow_seeded_ = false;  // seed(): the next commit scans for anonymous (written) pages
  size_t last_rehashed_ = 0;
};

}  // namespace aocu::merkle
