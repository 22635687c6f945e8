// Page-Merkle commitment; see merkle.h for the definition and the choice of dirty-page detection.
#include "merkle.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace aocu::merkle {

namespace {

using aocu::hash::Hasher;

// Kernel ABI newer than Debian 12's headers (Linux 6.7: uffd WP_ASYNC and the PAGEMAP_SCAN ioctl).
constexpr uint64_t kUffdFeatureWpUnpopulated = 1ULL << 13;
constexpr uint64_t kUffdFeatureWpAsync = 1ULL << 15;
constexpr int kUffdUserModeOnly = 1;
struct PageRegion {
  uint64_t start, end, categories;
};
struct PmScanArg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask,
      category_anyof_mask, return_mask;
};
constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);
constexpr uint64_t kPageIsWritten = 1 << 1;
constexpr uint64_t kPmScanWpMatching = 1 << 0;
constexpr uint64_t kPmScanCheckWpAsync = 1 << 1;
constexpr size_t kOsPage = 4096;

Digest leaf_hash(Hasher& h, const uint8_t* p, size_t n) {
  static const uint8_t kLeaf = 0x00;
  h.update(&kLeaf, 1);
  h.update(p, n);
  auto v = h.finish();
  Digest d;
  std::memcpy(d.data(), v.data(), 32);
  return d;
}

Digest node_hash(const Digest& l, const Digest& r) {
  uint8_t buf[65];
  buf[0] = 0x01;
  std::memcpy(buf + 1, l.data(), 32);
  std::memcpy(buf + 33, r.data(), 32);
  return aocu::hash::sha256(buf, sizeof buf);
}

Digest root_hash(size_t len, const Digest& top) {
  uint8_t buf[41];
  buf[0] = 0x02;
  for (int i = 0; i < 8; ++i) buf[1 + i] = static_cast<uint8_t>(static_cast<uint64_t>(len) >> (8 * i));
  std::memcpy(buf + 9, top.data(), 32);
  return aocu::hash::sha256(buf, sizeof buf);
}

size_t pages_for(size_t len) { return (len + kPageSize - 1) / kPageSize; }

// Builds levels_[1..] from levels_[0] completely.
void build_levels(std::vector<std::vector<Digest>>& levels) {
  levels.resize(1);
  while (levels.back().size() > 1) {
    const auto& lo = levels.back();
    std::vector<Digest> up((lo.size() + 1) / 2);
    for (size_t j = 0; j < up.size(); ++j)
      up[j] = (2 * j + 1 < lo.size()) ? node_hash(lo[2 * j], lo[2 * j + 1]) : lo[2 * j];
    levels.push_back(std::move(up));
  }
}

Digest top_of(const std::vector<std::vector<Digest>>& levels) {
  if (levels.empty() || levels[0].empty()) return Digest{};
  return levels.back()[0];
}

}  // namespace

// One userfaultfd context in WP_ASYNC mode over one contiguous range, scanned with PAGEMAP_SCAN.
struct PageMerkle::Tracker {
  int uffd = -1;
  int pagemap = -1;
  pid_t pid = 0;
  uint64_t start = 0, end = 0;  // registered range

  ~Tracker() {
    // Closing the uffd unregisters every range it owns; the kernel drops the write protection lazily.
    if (uffd >= 0) close(uffd);
    if (pagemap >= 0) close(pagemap);
  }

  bool open_ctx() {
    pid = getpid();
    uffd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | kUffdUserModeOnly));
    if (uffd < 0) uffd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
    if (uffd < 0) return false;
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = kUffdFeatureWpAsync | kUffdFeatureWpUnpopulated;
    // Without WP_ASYNC a write to a protected page would block waiting for us: never register then.
    if (ioctl(uffd, UFFDIO_API, &api) != 0) return false;
    if ((api.features & kUffdFeatureWpAsync) == 0 || (api.features & kUffdFeatureWpUnpopulated) == 0) return false;
    pagemap = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    return pagemap >= 0;
  }

  // Registers [s, e) for write-protect tracking and protects it. Pages are then reported only once written.
  bool add_range(uint64_t s, uint64_t e) {
    if (s >= e) return true;
    uffdio_register reg{};
    reg.range.start = s;
    reg.range.len = e - s;
    reg.mode = UFFDIO_REGISTER_MODE_WP;
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) return false;
    uffdio_writeprotect wp{};
    wp.range.start = s;
    wp.range.len = e - s;
    wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
    if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) != 0) return false;
    if (start == end) start = s;
    end = std::max(end, e);
    return true;
  }

  // Reports 4 KiB ranges written since the last scan (and re-protects them). False if the scan cannot be
  // trusted (mapping replaced, unregistered, ...): the caller then treats everything as dirty.
  template <typename F>
  bool scan(uint64_t s, uint64_t e, F on_written) {
    PageRegion vec[256];
    uint64_t pos = s;
    while (pos < e) {
      PmScanArg a{};
      a.size = sizeof a;
      a.flags = kPmScanWpMatching | kPmScanCheckWpAsync;
      a.start = pos;
      a.end = e;
      a.vec = reinterpret_cast<uint64_t>(vec);
      a.vec_len = sizeof vec / sizeof vec[0];
      a.category_mask = kPageIsWritten;
      a.return_mask = kPageIsWritten;
      long n = ioctl(pagemap, kPagemapScan, &a);
      if (n < 0) return false;
      for (long i = 0; i < n; ++i) on_written(vec[i].start, vec[i].end);
      if (a.walk_end <= pos) return false;  // no progress: do not loop forever
      pos = a.walk_end;
    }
    return true;
  }
};

namespace {
constexpr uint64_t kPageIsFile = 1 << 2, kPageIsPresent = 1 << 3, kPageIsSwapped = 1 << 4;

// Pages of [s, e) (a private mapping of a page image) that differ from the image's: present anonymous
// copies (written) or swapped-out ones. False when PAGEMAP_SCAN is unavailable.
template <typename F>
bool scan_cow_written(uint64_t s, uint64_t e, F on_written) {
  int pm = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (pm < 0) return false;
  PageRegion vec[256];
  uint64_t pos = s;
  bool ok = true;
  while (ok && pos < e) {
    PmScanArg a{};
    a.size = sizeof a;
    a.start = pos;
    a.end = e;
    a.vec = reinterpret_cast<uint64_t>(vec);
    a.vec_len = sizeof vec / sizeof vec[0];
    a.category_anyof_mask = kPageIsPresent | kPageIsSwapped;
    a.return_mask = kPageIsFile | kPageIsPresent | kPageIsSwapped;
    long n = ioctl(pm, kPagemapScan, &a);
    if (n < 0) {
      ok = false;
      break;
    }
    for (long i = 0; i < n; ++i) {
      uint64_t c = vec[i].categories;
      if ((c & kPageIsSwapped) || ((c & kPageIsPresent) && !(c & kPageIsFile))) on_written(vec[i].start, vec[i].end);
    }
    if (a.walk_end <= pos) ok = false;
    pos = a.walk_end;
  }
  close(pm);
  return ok;
}
}  // namespace

PageMerkle::PageMerkle(Method preferred) : preferred_(preferred) {}
PageMerkle::~PageMerkle() = default;

void PageMerkle::reset() {
  std::lock_guard<std::mutex> g(mu_);
  reset_locked();
}

void PageMerkle::reset_locked() {
  tracker_.reset();
  shadow_.clear();
  shadow_.shrink_to_fit();
  levels_.clear();
  committed_ = false;
  using_uffd_ = false;
  cow_seeded_ = false;
  base_ = nullptr;
  len_ = 0;
  root_ = Digest{};
  last_rehashed_ = 0;
}

const char* PageMerkle::method() const {
  std::lock_guard<std::mutex> g(mu_);
  if (!committed_) return "none";
  return using_uffd_ ? "uffd-wp" : "shadow";
}

void PageMerkle::full_hash(const uint8_t* data, size_t len) {
  Hasher h(Hasher::Alg::SHA256);
  size_t n = pages_for(len);
  levels_.assign(1, std::vector<Digest>(n));
  for (size_t i = 0; i < n; ++i) {
    size_t off = i * kPageSize;
    levels_[0][i] = leaf_hash(h, data + off, std::min(kPageSize, len - off));
  }
  build_levels(levels_);
  last_rehashed_ = n;
}

void PageMerkle::rebuild_tree(const std::vector<size_t>& dirty) {
  std::vector<size_t> cur = dirty;  // sorted, unique
  for (size_t k = 0; k + 1 < levels_.size(); ++k) {
    const auto& lo = levels_[k];
    auto& up = levels_[k + 1];
    std::vector<size_t> next;
    for (size_t i : cur) {
      size_t j = i / 2;
      if (!next.empty() && next.back() == j) continue;
      next.push_back(j);
      up[j] = (2 * j + 1 < lo.size()) ? node_hash(lo[2 * j], lo[2 * j + 1]) : lo[2 * j];
    }
    cur.swap(next);
  }
}

Digest PageMerkle::commit(const uint8_t* data, size_t len) {
  std::lock_guard<std::mutex> g(mu_);
  last_rehashed_ = 0;
  bool restart = !committed_ || data != base_ || len < len_;
  if (!restart && using_uffd_ && tracker_->pid != getpid()) restart = true;  // forked: the uffd is not ours

  std::vector<size_t> dirty;
  if (!restart) {
    const size_t old_pages = pages_for(len_), new_pages = pages_for(len);
    std::vector<uint8_t> mark(new_pages, 0);
    if (cow_seeded_) {
      // First commit after seed(): pages written since are the anonymous ones; then track as usual.
      const uint64_t b = reinterpret_cast<uint64_t>(data);
      restart = !scan_cow_written(b, b + len_, [&](uint64_t s, uint64_t e) {
        if (e <= s || s < b) return;
        for (size_t p = (s - b) / kPageSize; p < new_pages && b + p * kPageSize < e; ++p) mark[p] = 1;
      });
      cow_seeded_ = false;
      if (!restart) {
        if (preferred_ != Method::Shadow && b % kOsPage == 0 && len % kOsPage == 0) {
          auto t = std::make_unique<Tracker>();
          if (t->open_ctx() && t->add_range(b, b + len)) {
            tracker_ = std::move(t);
            using_uffd_ = true;
          }
        }
        if (!using_uffd_) shadow_.assign(data, data + len);
      }
    } else if (using_uffd_) {
      const uint64_t b = reinterpret_cast<uint64_t>(data);
      if (len > len_ && (len % kOsPage != 0 || !tracker_->add_range(b + len_, b + len))) {
        restart = true;
      } else {
        restart = !tracker_->scan(b, b + len, [&](uint64_t s, uint64_t e) {
          if (e <= s || s < b) return;
          for (size_t p = (s - b) / kPageSize; p < new_pages && b + p * kPageSize < e; ++p) mark[p] = 1;
        });
      }
    } else {
      for (size_t p = 0; p < old_pages; ++p) {
        size_t off = p * kPageSize, n = std::min(kPageSize, len_ - off);
        if (std::memcmp(data + off, shadow_.data() + off, n) != 0) {
          std::memcpy(shadow_.data() + off, data + off, n);
          mark[p] = 1;
        }
      }
      if (len > len_) shadow_.insert(shadow_.end(), data + len_, data + len);
    }
    if (!restart) {
      if (len > len_) {
        // The old last page may have been partial; new pages are all dirty.
        for (size_t p = old_pages ? old_pages - 1 : 0; p < new_pages; ++p) mark[p] = 1;
      }
      for (size_t p = 0; p < new_pages; ++p)
        if (mark[p]) dirty.push_back(p);
    }
  }

  if (restart) {
    tracker_.reset();
    shadow_.clear();
    using_uffd_ = false;
    const uint64_t b = reinterpret_cast<uint64_t>(data);
    if (preferred_ != Method::Shadow && len > 0 && b % kOsPage == 0 && len % kOsPage == 0) {
      auto t = std::make_unique<Tracker>();
      // Protect before hashing, so writes racing the first hash are reported next time.
      if (t->open_ctx() && t->add_range(b, b + len)) {
        tracker_ = std::move(t);
        using_uffd_ = true;
      }
    }
    if (!using_uffd_) shadow_.assign(data, data + len);
    full_hash(data, len);
  } else {
    const size_t new_pages = pages_for(len);
    bool shape_changed = new_pages != levels_[0].size();
    levels_[0].resize(new_pages);
    Hasher h(Hasher::Alg::SHA256);
    for (size_t p : dirty) {
      size_t off = p * kPageSize;
      levels_[0][p] = leaf_hash(h, data + off, std::min(kPageSize, len - off));
    }
    if (shape_changed)
      build_levels(levels_);
    else
      rebuild_tree(dirty);
    last_rehashed_ = dirty.size();
  }
  base_ = data;
  len_ = len;
  committed_ = true;
  root_ = root_hash(len, top_of(levels_));
  return root_;
}

Digest leaf_digest(const uint8_t* p, size_t n) {
  Hasher h(Hasher::Alg::SHA256);
  return leaf_hash(h, p, n);
}

Digest root_from_leaves(size_t len, const std::vector<Digest>& leaves) {
  std::vector<std::vector<Digest>> levels(1, leaves);
  build_levels(levels);
  return root_hash(len, top_of(levels));
}

Digest PageMerkle::seed(const uint8_t* data, size_t len, const std::vector<Digest>& leaves) {
  std::lock_guard<std::mutex> g(mu_);
  if (leaves.size() != pages_for(len)) throw std::invalid_argument("PageMerkle.seed: wrong number of leaves");
  reset_locked();
  levels_.assign(1, leaves);
  build_levels(levels_);
  base_ = data;
  len_ = len;
  committed_ = true;
  cow_seeded_ = true;
  root_ = root_hash(len, top_of(levels_));
  return root_;
}

Digest full_root(const uint8_t* data, size_t len) {
  Hasher h(Hasher::Alg::SHA256);
  std::vector<std::vector<Digest>> levels(1, std::vector<Digest>(pages_for(len)));
  for (size_t i = 0; i < levels[0].size(); ++i) {
    size_t off = i * kPageSize;
    levels[0][i] = leaf_hash(h, data + off, std::min(kPageSize, len - off));
  }
  build_levels(levels);
  return root_hash(len, top_of(levels));
}

}  // namespace aocu::merkle
