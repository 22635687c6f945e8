// Page deltas of incremental checkpoints and page images of evicted states, in native code (cu._native.pagedelta,
// used by cu/node/eval/checkpoints.py; cu/node/eval/memimage.py is the Python reference of the same formats).
//
// A memory image here is the engine's AOMI v1 encoding (engine/snapshot.h). diff() and apply() work on the
// non-zero pages of two images, with the GIL released, exactly as memimage.diff/apply do: a delta lists the
// pages whose bytes differ (ascending) and holds new XOR old for each. page_image() turns an image into a raw
// page image (engine/memory_creator.h, file form "AOPI" v1) held in a sealed memfd, so that an evicted state
// is restored copy-on-write (no memory written) instead of decoded into fresh memory. Its page digests are computed here for
// the stored (non-zero) pages only; every absent page has the digest of a zero page. capture_diff() gives an
// eviction's delta and the new image in one pass over memory (the old image decoded once, the new one never).
#include <fcntl.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <sys/mman.h>
#include <unistd.h>
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "engine/instance.h"
#include "engine/memory_creator.h"
#include "hash.h"
#include "merkle.h"
#include "py_modules.h"

namespace py = pybind11;

namespace aocu::pagedelta {

using engine::SnapshotDataError;

constexpr uint64_t kPage = 65536;
constexpr uint64_t kOsPage = 4096;
constexpr uint64_t kMaxSize = uint64_t(1) << 40;

// The non-zero pages of a memory of `size` bytes (page index -> bytes; a page at the end may be short).
struct Pages {
  uint64_t size = 0;
  std::map<uint64_t, std::string> pages;
};

uint64_t page_count(uint64_t size) { return (size + kPage - 1) / kPage; }

bool is_zero(const std::string& p) {
  static const std::string zeros(kPage, '\0');
  return std::memcmp(p.data(), zeros.data(), std::min<size_t>(p.size(), kPage)) == 0;
}

// dst ^= src over n bytes (n a multiple of 8 for whole pages; any tail byte by byte)
void xor_into(char* dst, const char* src, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t a, b;
    std::memcpy(&a, dst + i, 8);
    std::memcpy(&b, src + i, 8);
    a ^= b;
    std::memcpy(dst + i, &a, 8);
  }
  for (; i < n; ++i) dst[i] = static_cast<char>(dst[i] ^ src[i]);
}

// An AOMI v1 image being read (header and bitmap checked on construction): its stored pages, decompressed in
// page order by `read`.
class ImageReader {
 public:
  explicit ImageReader(const std::string& img) : img_(img), dc_(ZSTD_createDCtx(), ZSTD_freeDCtx) {
    if (img.size() < 24 || img.compare(0, 4, "AOMI") != 0) throw SnapshotDataError("not an AOMI memory image");
    uint32_t ver;
    std::memcpy(&ver, img.data() + 4, 4);
    std::memcpy(&size, img.data() + 8, 8);
    std::memcpy(&count, img.data() + 16, 8);
    if (ver != 1 || size > kMaxSize || count != page_count(size))
      throw SnapshotDataError("AOMI image version " + std::to_string(ver) + " / page count not readable");
    const size_t data = kBitmap + (count + 7) / 8;
    if (img.size() < data) throw SnapshotDataError("AOMI image truncated in its bitmap");
    if (!dc_) throw std::runtime_error("zstd: out of memory");
    in_ = ZSTD_inBuffer{img.data() + data, img.size() - data, 0};
  }
  bool stored(uint64_t p) const {
    return p < count && ((static_cast<uint8_t>(img_[kBitmap + p / 8]) >> (p % 8)) & 1);
  }
  // Page `p`, a stored one after every stored page before it has been read.
  const std::string& read(uint64_t p) {
    page_.assign(std::min<uint64_t>(kPage, size - p * kPage), '\0');
    ZSTD_outBuffer ob{page_.data(), page_.size(), 0};
    while (ob.pos < ob.size) {
      size_t r = ZSTD_decompressStream(dc_.get(), &ob, &in_);
      if (ZSTD_isError(r)) throw SnapshotDataError(std::string("AOMI image body: ") + ZSTD_getErrorName(r));
      if (ob.pos < ob.size && in_.pos == in_.size) throw SnapshotDataError("AOMI image body does not hold its pages");
    }
    return page_;
  }
  uint64_t size = 0, count = 0;

 private:
  static constexpr size_t kBitmap = 24;
  const std::string& img_;
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dc_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  std::string page_;
};

// Calls `each(page index, page bytes)` for every page stored in the AOMI v1 image `img`, in order.
template <class F>
uint64_t walk(const std::string& img, F each) {
  ImageReader r(img);
  for (uint64_t p = 0; p < r.count; ++p)
    if (r.stored(p)) each(p, r.read(p));
  return r.size;
}

Pages decode(const std::string& img) {
  Pages out;
  out.size = walk(img, [&](uint64_t p, const std::string& page) { out.pages.emplace(p, page); });
  return out;
}

std::string encode(const Pages& m, int level) {
  const uint64_t count = page_count(m.size);
  std::string out = "AOMI";
  const uint32_t ver = 1;
  out.append(reinterpret_cast<const char*>(&ver), 4);
  out.append(reinterpret_cast<const char*>(&m.size), 8);
  out.append(reinterpret_cast<const char*>(&count), 8);
  const size_t bm = out.size();
  out.append((count + 7) / 8, '\0');
  std::string body;
  for (const auto& [p, page] : m.pages) {
    if (p >= count) throw SnapshotDataError("page " + std::to_string(p) + " beyond a memory of " +
                                            std::to_string(m.size) + " bytes");
    if (is_zero(page)) continue;
    out[bm + p / 8] = static_cast<char>(out[bm + p / 8] | (1 << (p % 8)));
    body += page;
  }
  if (body.empty()) return out;
  std::string frame(ZSTD_compressBound(body.size()), '\0');
  size_t n = ZSTD_compress(frame.data(), frame.size(), body.data(), body.size(), level);
  if (ZSTD_isError(n)) throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(n));
  out.append(frame.data(), n);
  return out;
}

// (pages that differ, their XORs new ^ old concatenated): apply(old, ...) == new.
std::pair<std::vector<uint64_t>, std::string> diff(const Pages& a, const Pages& b) {
  std::vector<uint64_t> changed;
  std::string xors;
  auto put = [&](uint64_t p, const std::string* x, const std::string* y) {
    const size_t start = xors.size();
    xors.append(kPage, '\0');
    char* o = xors.data() + start;
    for (const std::string* s : {x, y})
      if (s) xor_into(o, s->data(), s->size());
    changed.push_back(p);
  };
  auto ia = a.pages.begin(), ib = b.pages.begin();
  while (ia != a.pages.end() || ib != b.pages.end()) {
    if (ib == b.pages.end() || (ia != a.pages.end() && ia->first < ib->first)) {
      if (!is_zero(ia->second)) put(ia->first, &ia->second, nullptr);
      ++ia;
    } else if (ia == a.pages.end() || ib->first < ia->first) {
      if (!is_zero(ib->second)) put(ib->first, nullptr, &ib->second);
      ++ib;
    } else {
      if (ia->second != ib->second) put(ia->first, &ia->second, &ib->second);
      ++ia, ++ib;
    }
  }
  return {std::move(changed), std::move(xors)};
}

void apply(Pages& m, const std::vector<uint64_t>& changed, const std::string& xors) {
  if (xors.size() != changed.size() * kPage) throw SnapshotDataError("delta holds the wrong number of pages");
  for (size_t i = 0; i < changed.size(); ++i) {
    std::string& page = m.pages[changed[i]];
    if (page.size() < kPage) page.resize(kPage, '\0');
    xor_into(page.data(), xors.data() + i * kPage, kPage);
    if (is_zero(page)) m.pages.erase(changed[i]);
  }
}

const merkle::Digest& zero_leaf() {
  static const merkle::Digest z = [] {
    std::string zeros(kPage, '\0');
    return merkle::leaf_digest(reinterpret_cast<const uint8_t*>(zeros.data()), zeros.size());
  }();
  return z;
}

bool pwrite_all(int fd, const char* p, size_t n, uint64_t off) {
  while (n) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w, n -= static_cast<size_t>(w), off += static_cast<uint64_t>(w);
  }
  return true;
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// The image `img` as a page image in a sealed memfd, in the file form of engine/memory_creator.h
// ("AOPI" | u32 1 | u64 size | u64 meta length (0) | leaf digests | SHA-256 of all before | pad to 4 KiB | pages),
// opened through PageImage::open (structure and header digest checked there).
// `known`: the leaf digests of exactly this image (a page-Merkle commit of the memory it was captured from),
// 32 bytes per page, which saves hashing its pages; empty: computed here.
std::shared_ptr<engine::PageImage> page_image(const std::string& img, const std::string& known) {
  uint64_t size;
  if (img.size() < 24 || img.compare(0, 4, "AOMI") != 0) throw SnapshotDataError("not an AOMI memory image");
  std::memcpy(&size, img.data() + 8, 8);
  if (size % kOsPage || size > kMaxSize) throw SnapshotDataError("memory image size is not a multiple of the page size");
  const uint64_t count = page_count(size);
  std::string hdr("AOPI", 4);
  const uint32_t ver = 1;
  const uint64_t meta_len = 0;
  hdr.append(reinterpret_cast<const char*>(&ver), 4);
  hdr.append(reinterpret_cast<const char*>(&size), 8);
  hdr.append(reinterpret_cast<const char*>(&meta_len), 8);
  const size_t leaves = hdr.size();
  if (!known.empty() && known.size() != 32 * count) throw SnapshotDataError("page image: wrong number of leaf digests");
  if (!known.empty()) hdr += known;
  for (uint64_t i = 0; known.empty() && i < count; ++i) hdr.append(reinterpret_cast<const char*>(zero_leaf().data()), 32);
  const uint64_t data_off = (hdr.size() + 32 + kOsPage - 1) / kOsPage * kOsPage;
  Fd f;
  f.fd = memfd_create("aocu-evicted-image", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (f.fd < 0) throw std::runtime_error(std::string("memfd_create: ") + std::strerror(errno));
  if (ftruncate(f.fd, static_cast<off_t>(data_off + size)) != 0)
    throw std::runtime_error(std::string("memfd ftruncate: ") + std::strerror(errno));
  bool ok = true;
  walk(img, [&](uint64_t p, const std::string& page) {
    if (known.empty()) {
      merkle::Digest d = merkle::leaf_digest(reinterpret_cast<const uint8_t*>(page.data()), page.size());
      std::memcpy(hdr.data() + leaves + 32 * p, d.data(), 32);
    }
    ok = ok && pwrite_all(f.fd, page.data(), page.size(), data_off + p * kPage);
  });
  auto hd = hash::sha256(reinterpret_cast<const uint8_t*>(hdr.data()), hdr.size());
  hdr.append(reinterpret_cast<const char*>(hd.data()), hd.size());
  hdr.resize(data_off, '\0');
  ok = ok && pwrite_all(f.fd, hdr.data(), hdr.size(), 0);
  if (!ok) throw std::runtime_error(std::string("cannot fill the page image: ") + std::strerror(errno));
  if (fcntl(f.fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0)
    throw std::runtime_error(std::string("cannot seal the page image: ") + std::strerror(errno));
  return engine::PageImage::open("/proc/self/fd/" + std::to_string(f.fd), false);
}

// Checks that `leaves` holds one digest per 64 KiB page of a memory of `size` bytes (whole pages only).
void check_leaves(const std::string& leaves, uint64_t size) {
  if (size % kPage || leaves.size() != 32 * page_count(size))
    throw SnapshotDataError("page digests do not match a memory of " + std::to_string(size) + " bytes");
}

bool leaf_is_zero(const std::string& leaves, uint64_t p) {
  return std::memcmp(leaves.data() + 32 * p, zero_leaf().data(), 32) == 0;
}

// An AOMI v1 image being written page by page: the header and page bitmap, then the stored (non-zero) pages as one
// streamed zstd frame, so no second copy of the pages is held.
class ImageWriter {
 public:
  ImageWriter(uint64_t size, int level) : cc_(ZSTD_createCCtx(), ZSTD_freeCCtx), buf_(ZSTD_CStreamOutSize()) {
    if (!cc_) throw std::runtime_error("zstd: out of memory");
    ZSTD_CCtx_setParameter(cc_.get(), ZSTD_c_compressionLevel, level);
    const uint32_t ver = 1;
    const uint64_t count = page_count(size);
    out_ = "AOMI";
    out_.append(reinterpret_cast<const char*>(&ver), 4);
    out_.append(reinterpret_cast<const char*>(&size), 8);
    out_.append(reinterpret_cast<const char*>(&count), 8);
    bm_ = out_.size();
    out_.append((count + 7) / 8, '\0');
  }
  void page(uint64_t p, const uint8_t* src) {
    out_[bm_ + p / 8] = static_cast<char>(out_[bm_ + p / 8] | (1 << (p % 8)));
    pump(src, kPage, ZSTD_e_continue);
    any_ = true;
  }
  std::string finish() {
    if (any_) pump(nullptr, 0, ZSTD_e_end);
    return std::move(out_);
  }

 private:
  void pump(const uint8_t* src, size_t n, ZSTD_EndDirective mode) {
    ZSTD_inBuffer in{src, n, 0};
    for (;;) {
      ZSTD_outBuffer ob{buf_.data(), buf_.size(), 0};
      size_t r = ZSTD_compressStream2(cc_.get(), &ob, &in, mode);
      if (ZSTD_isError(r)) throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(r));
      out_.append(buf_.data(), ob.pos);
      if (mode == ZSTD_e_end ? r == 0 : in.pos == in.size) break;
    }
  }
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cc_;
  std::vector<char> buf_;
  std::string out_;
  size_t bm_ = 0;
  bool any_ = false;
};

// The AOMI v1 image of [mem, mem + size) whose page digests are `leaves` (exact now: a commit just taken), reading
// only its non-zero pages: a freshly restored copy-on-write memory is not read (and faulted in) page by page.
std::string encode_known(const uint8_t* mem, uint64_t size, const std::string& leaves, int level) {
  check_leaves(leaves, size);
  const uint64_t count = page_count(size);
  ImageWriter out(size, level);
  for (uint64_t p = 0; p < count; ++p)
    if (!leaf_is_zero(leaves, p)) out.page(p, mem + p * kPage);
  return out.finish();
}

// diff(old image, current memory) from the page digests of both (equal digests, equal pages): only the old
// image is decompressed, and only the changed pages of memory are read.
std::pair<std::vector<uint64_t>, std::string> diff_known(const std::string& old_img, const std::string& old_leaves,
                                                         const uint8_t* mem, uint64_t size,
                                                         const std::string& leaves) {
  check_leaves(leaves, size);
  std::vector<uint64_t> changed;
  std::map<uint64_t, size_t> slot;  // changed page -> its index in changed / xors
  uint64_t old_size = 0;
  if (old_img.size() >= 24) std::memcpy(&old_size, old_img.data() + 8, 8);
  check_leaves(old_leaves, old_size);
  const uint64_t n_old = page_count(old_size), n_new = page_count(size);
  for (uint64_t p = 0; p < std::max(n_old, n_new); ++p) {
    const char* a = p < n_old ? old_leaves.data() + 32 * p : reinterpret_cast<const char*>(zero_leaf().data());
    const char* b = p < n_new ? leaves.data() + 32 * p : reinterpret_cast<const char*>(zero_leaf().data());
    if (std::memcmp(a, b, 32) == 0) continue;
    slot.emplace(p, changed.size());
    changed.push_back(p);
  }
  std::string xors(changed.size() * kPage, '\0');
  for (size_t i = 0; i < changed.size(); ++i)
    if (changed[i] < n_new) std::memcpy(xors.data() + i * kPage, mem + changed[i] * kPage, kPage);
  if (!changed.empty())
    walk(old_img, [&](uint64_t p, const std::string& page) {
      auto it = slot.find(p);
      if (it != slot.end()) xor_into(xors.data() + it->second * kPage, page.data(), page.size());
    });
  return {std::move(changed), std::move(xors)};
}


// One pass over the memory of an instance whose previous state is the AOMI image `old_img`: the delta from that
// image (as diff(decode(old_img), decode(new image)) gives it) and the new image (encode_memory's format, at
// `level`), without decoding the new image again. Only for memories of whole 64 KiB pages (wasm memories).
struct CaptureDiff {
  std::string image;
  std::vector<uint64_t> changed;
  std::string xors;
};

CaptureDiff capture_diff(const std::string& old_img, const uint8_t* mem, uint64_t size, int level) {
  if (size % kPage) throw SnapshotDataError("memory size is not a whole number of 64 KiB pages");
  ImageReader old(old_img);
  if (old.size % kPage) throw SnapshotDataError("AOMI image of a memory that is not whole 64 KiB pages");
  const uint64_t count = page_count(size);
  CaptureDiff out;
  ImageWriter img(size, level);
  static const std::string zeros(kPage, '\0');
  for (uint64_t p = 0; p < std::max(old.count, count); ++p) {
    const bool stored = old.stored(p);
    const char* a = stored ? old.read(p).data() : zeros.data();
    const char* b = p < count ? reinterpret_cast<const char*>(mem + p * kPage) : zeros.data();
    const bool same = std::memcmp(a, b, kPage) == 0;
    // an unchanged page is non-zero when the old image stored it (the encoders never store a zero page)
    if (p < count && (same ? stored : std::memcmp(b, zeros.data(), kPage) != 0))
      img.page(p, reinterpret_cast<const uint8_t*>(b));
    if (same) continue;
    out.changed.push_back(p);
    const size_t at = out.xors.size();
    out.xors.append(a, kPage);
    xor_into(out.xors.data() + at, b, kPage);
  }
  out.image = img.finish();
  return out;
}

}  // namespace aocu::pagedelta

void aocu_register_pagedelta(py::module_& m) {
  namespace pd = aocu::pagedelta;
  auto d = m.def_submodule("pagedelta", "page deltas and page images of AOMI memory images (cu/node/eval)");
  d.def(
      "diff",
      [](const py::bytes& old_img, const py::bytes& new_img) {
        std::string a = old_img, b = new_img;
        std::pair<std::vector<uint64_t>, std::string> r;
        {
          py::gil_scoped_release nogil;
          r = pd::diff(pd::decode(a), pd::decode(b));
        }
        return py::make_tuple(py::cast(r.first), py::bytes(r.second));
      },
      py::arg("old"), py::arg("new"),
      "(indices of the pages that differ, their XORs new ^ old concatenated) of two AOMI images");
  d.def(
      "apply",
      [](const py::bytes& img, const std::vector<std::tuple<uint64_t, std::vector<uint64_t>, py::bytes>>& deltas,
         int level) {
        std::string base = img;
        std::vector<std::tuple<uint64_t, std::vector<uint64_t>, std::string>> ds;
        for (const auto& [size, pages, xors] : deltas) ds.emplace_back(size, pages, std::string(xors));
        std::string out;
        {
          py::gil_scoped_release nogil;
          pd::Pages m = pd::decode(base);
          for (const auto& [size, pages, xors] : ds) {
            if (size > pd::kMaxSize) throw aocu::engine::SnapshotDataError("delta memory size out of range");
            pd::apply(m, pages, xors);
            m.size = size;
          }
          out = pd::encode(m, level);
        }
        return py::bytes(out);
      },
      py::arg("image"), py::arg("deltas"), py::arg("level") = 1,
      "the AOMI image after each (memory size, changed pages, XORs) of `deltas` in order");
  d.def(
      "capture",
      [](const aocu::engine::Instance& inst, const py::bytes& leaves, int level) {
        std::string l = leaves;
        aocu::engine::StateImage st;
        {
          py::gil_scoped_release nogil;
          st = inst.capture(false);
          st.memory = pd::encode_known(inst.memory_data(), inst.memory_size(), l, level);
        }
        py::list globals;
        for (auto& g : st.globals) globals.append(py::make_tuple(g.name, g.kind, g.bits));
        return py::make_tuple(st.mem_size, py::bytes(st.memory), globals, py::bytes(st.host));
      },
      py::arg("instance"), py::arg("leaves"), py::arg("level") = 3,
      "the instance's state as its `capture()` gives it, its memory encoded from the page digests of a commit "
      "just taken (only the non-zero pages are read)");
  d.def(
      "capture_diff",
      [](const aocu::engine::Instance& inst, const py::bytes& old_img, int level) {
        std::string a = old_img;
        aocu::engine::StateImage st;
        pd::CaptureDiff r;
        {
          py::gil_scoped_release nogil;
          st = inst.capture(false);
          r = pd::capture_diff(a, inst.memory_data(), inst.memory_size(), level);
        }
        py::list globals;
        for (auto& g : st.globals) globals.append(py::make_tuple(g.name, g.kind, g.bits));
        return py::make_tuple(py::make_tuple(st.mem_size, py::bytes(r.image), globals, py::bytes(st.host)),
                              py::cast(r.changed), py::bytes(r.xors));
      },
      py::arg("instance"), py::arg("old"), py::arg("level") = 1,
      "((the instance's state as capture() gives it, its memory encoded at `level`), changed pages, XORs): the "
      "delta from the AOMI image `old` to the memory now, in one pass (no decoding of the new image)");
  d.def(
      "diff_known",
      [](const py::bytes& old_img, const py::bytes& old_leaves, const aocu::engine::Instance& inst,
         const py::bytes& leaves) {
        std::string a = old_img, al = old_leaves, l = leaves;
        std::pair<std::vector<uint64_t>, std::string> r;
        {
          py::gil_scoped_release nogil;
          r = pd::diff_known(a, al, inst.memory_data(), inst.memory_size(), l);
        }
        return py::make_tuple(py::cast(r.first), py::bytes(r.second));
      },
      py::arg("old"), py::arg("old_leaves"), py::arg("instance"), py::arg("leaves"),
      "diff(old image, the instance's memory now) from the page digests of both (a commit just taken)");
  d.def(
      "page_image",
      [](const py::bytes& img, const py::bytes& leaves) {
        std::string s = img, l = leaves;
        py::gil_scoped_release nogil;
        return pd::page_image(s, l);
      },
      py::arg("image"), py::arg("leaves") = py::bytes(),
      "the AOMI image as a raw page image (sealed memfd) for a copy-on-write restore; `leaves`: its page "
      "digests when known (else hashed here)");
}
