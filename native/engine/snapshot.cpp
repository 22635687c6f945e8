// Sparse + zstd memory images. Restoring a mostly-empty 64 MiB memory touches only the stored pages.
#include "engine/snapshot.h"

#include <sys/mman.h>
#include <unistd.h>
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "engine/engine.h"

namespace aocu::engine {

namespace {
constexpr uint32_t kImgVersion = 1;

bool page_is_zero(const uint8_t* p, size_t n) {
  const uint64_t* w = reinterpret_cast<const uint64_t*>(p);
  size_t nw = n / 8;
  for (size_t i = 0; i < nw; i += 8) {
    uint64_t acc = 0;
    for (size_t k = i; k < i + 8 && k < nw; ++k) acc |= w[k];
    if (acc) return false;
  }
  for (size_t i = nw * 8; i < n; ++i)
    if (p[i]) return false;
  return true;
}

struct CCtx {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ~CCtx() { ZSTD_freeCCtx(c); }
};
struct DCtx {
  ZSTD_DCtx* d = ZSTD_createDCtx();
  ~DCtx() { ZSTD_freeDCtx(d); }
};
}  // namespace

std::string encode_memory(const uint8_t* mem, size_t size, int level) {
  uint64_t pages = (size + kWasmPage - 1) / kWasmPage;
  std::string out = "AOMI";
  out.append(reinterpret_cast<const char*>(&kImgVersion), 4);
  uint64_t sz = size;
  out.append(reinterpret_cast<const char*>(&sz), 8);
  out.append(reinterpret_cast<const char*>(&pages), 8);
  size_t bm_off = out.size();
  out.append((pages + 7) / 8, '\0');
  CCtx cc;
  if (!cc.c) throw std::runtime_error("zstd: out of memory");
  ZSTD_CCtx_setParameter(cc.c, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cc.c, ZSTD_c_literalCompressionMode, ZSTD_ps_disable);
  std::vector<char> buf(ZSTD_CStreamOutSize());
  auto pump = [&](const uint8_t* src, size_t n, ZSTD_EndDirective mode) {
    ZSTD_inBuffer in{src, n, 0};
    for (;;) {
      ZSTD_outBuffer ob{buf.data(), buf.size(), 0};
      size_t r = ZSTD_compressStream2(cc.c, &ob, &in, mode);
      if (ZSTD_isError(r)) throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(r));
      out.append(buf.data(), ob.pos);
      if (mode == ZSTD_e_end ? r == 0 : in.pos == in.size) break;
    }
  };
  for (uint64_t p = 0; p < pages; ++p) {
    size_t off = p * kWasmPage, n = std::min<size_t>(kWasmPage, size - off);
    if (page_is_zero(mem + off, n)) continue;
    out[bm_off + p / 8] = static_cast<char>(out[bm_off + p / 8] | (1 << (p % 8)));
    pump(mem + off, n, ZSTD_e_continue);
  }
  pump(nullptr, 0, ZSTD_e_end);
  return out;
}

namespace {
struct Header {
  uint64_t size, pages;
  size_t bm_off, data_off;
};
Header parse(const std::string& img) {
  if (img.size() < 24 || img.compare(0, 4, "AOMI") != 0) throw SnapshotDataError("memory image: bad magic");
  uint32_t ver;
  std::memcpy(&ver, img.data() + 4, 4);
  if (ver != kImgVersion) throw SnapshotDataError("memory image: unsupported version " + std::to_string(ver));
  Header h;
  std::memcpy(&h.size, img.data() + 8, 8);
  std::memcpy(&h.pages, img.data() + 16, 8);
  if (h.pages != (h.size + kWasmPage - 1) / kWasmPage || h.size > (uint64_t(1) << 40))
    throw SnapshotDataError("memory image: inconsistent size");
  h.bm_off = 24;
  h.data_off = 24 + (h.pages + 7) / 8;
  if (img.size() < h.data_off) throw SnapshotDataError("memory image: truncated bitmap");
  return h;
}
}  // namespace

uint64_t encoded_memory_size(const std::string& img) { return parse(img).size; }

void decode_memory(const std::string& img, uint8_t* mem, size_t mem_size, size_t zero_below) {
  Header h = parse(img);
  if (h.size > mem_size) throw SnapshotDataError("memory image larger than the instance memory");
  DCtx dc;
  if (!dc.d) throw std::runtime_error("zstd: out of memory");
  // Pages of a fresh memory that were never touched are not resident and read as zero: skip them instead
  // of writing zeros (which would fault in every page of a large, mostly empty memory).
  const size_t os_page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident;
  bool have_residency = false;
  if (zero_below && reinterpret_cast<uintptr_t>(mem) % os_page == 0) {
    resident.resize((zero_below + os_page - 1) / os_page);
    have_residency = mincore(mem, zero_below, resident.data()) == 0;
  }
  auto maybe_dirty = [&](size_t off, size_t n) {
    if (!have_residency) return true;
    for (size_t q = off / os_page; q < (off + n + os_page - 1) / os_page && q < resident.size(); ++q)
      if (resident[q] & 1) return true;
    return false;
  };
#ifdef MADV_POPULATE_WRITE
  // Pre-fault each run of stored pages with one call: much cheaper than a page fault per 4 KiB page
  // when restoring into a fresh memory (best effort; errors just leave demand faulting).
  if (reinterpret_cast<uintptr_t>(mem) % os_page == 0) {
    uint64_t run = 0;
    for (uint64_t p = 0; p <= h.pages; ++p) {
      bool stored = p < h.pages && ((static_cast<uint8_t>(img[h.bm_off + p / 8]) >> (p % 8)) & 1);
      if (stored) {
        ++run;
        continue;
      }
      if (run) {
        size_t off = (p - run) * kWasmPage, n = std::min<size_t>(run * kWasmPage, h.size - off);
        madvise(mem + off, n, MADV_POPULATE_WRITE);
      }
      run = 0;
    }
  }
#endif
  ZSTD_inBuffer in{img.data() + h.data_off, img.size() - h.data_off, 0};
  for (uint64_t p = 0; p < h.pages; ++p) {
    size_t off = p * kWasmPage, n = std::min<size_t>(kWasmPage, h.size - off);
    bool stored = (static_cast<uint8_t>(img[h.bm_off + p / 8]) >> (p % 8)) & 1;
    if (!stored) {
      if (off < zero_below) {
        size_t k = std::min(n, zero_below - off);
        if (maybe_dirty(off, k) && !page_is_zero(mem + off, k)) std::memset(mem + off, 0, k);
      }
      continue;
    }
    // decompress straight into the destination page: no intermediate buffer
    ZSTD_outBuffer ob{mem + off, n, 0};
    while (ob.pos < ob.size) {
      size_t r = ZSTD_decompressStream(dc.d, &ob, &in);
      if (ZSTD_isError(r)) throw SnapshotDataError(std::string("memory image: zstd: ") + ZSTD_getErrorName(r));
      if (ob.pos < ob.size && in.pos == in.size) throw SnapshotDataError("memory image: truncated data");
    }
  }
  if (h.size < zero_below) std::memset(mem + h.size, 0, std::min(zero_below, mem_size) - h.size);
}

}  // namespace aocu::engine
