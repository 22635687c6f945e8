// Linear-memory creator (mmap reservations we own) and raw page images; see memory_creator.h.
#include "engine/memory_creator.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>

#include "engine/engine.h"
#include "engine/snapshot.h"
#include "hash.h"
#include "merkle.h"

namespace aocu::engine {

using wt::api;

namespace {

constexpr size_t kOsPage = 4096;
// Memories without a fixed reservation (wasm64, or no declared maximum) reserve at most this much address
// space; they never move, so growth past it fails like any other memory.grow failure.
constexpr size_t kDynamicCap = size_t(64) << 30;

size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

struct Mem {
  uint8_t* region = nullptr;  // pre-guard | capacity | post-guard
  size_t region_len = 0;
  uint8_t* base = nullptr;
  size_t size = 0, capacity = 0;
};

std::mutex g_mu;
std::map<uintptr_t, Mem*> g_mems;  // by base address

wasmtime_error_t* error(const std::string& what) { return api->wasmtime_error_new(what.c_str()); }

uint8_t* get_memory(void* env, size_t* byte_size, size_t* capacity) {
  Mem* m = static_cast<Mem*>(env);
  *byte_size = m->size;
  *capacity = m->capacity;
  return m->base;
}

wasmtime_error_t* grow_memory(void* env, size_t new_size) {
  Mem* m = static_cast<Mem*>(env);
  if (new_size > m->capacity) return error("memory.grow past the reserved address space");
  if (new_size > m->size) {
    size_t from = round_up(m->size, kOsPage), to = round_up(new_size, kOsPage);
    if (to > from && mprotect(m->base + from, to - from, PROT_READ | PROT_WRITE) != 0)
      return error(std::string("memory.grow: mprotect: ") + std::strerror(errno));
  }
  std::lock_guard<std::mutex> g(g_mu);  // creator_owns reads size
  m->size = new_size;
  return nullptr;
}

void free_memory(void* env) {
  Mem* m = static_cast<Mem*>(env);
  {
    std::lock_guard<std::mutex> g(g_mu);
    g_mems.erase(reinterpret_cast<uintptr_t>(m->base));
  }
  if (m->region) munmap(m->region, m->region_len);
  delete m;
}

wasmtime_error_t* new_memory(void* env, const wasm_memorytype_t* ty, size_t minimum, size_t maximum,
                             size_t reserved, size_t guard, wasmtime_linear_memory_t* ret) {
  (void)env;
  (void)ty;
  size_t cap = reserved ? reserved : std::min(maximum, kDynamicCap);
  cap = round_up(std::max(cap, minimum), kOsPage);
  size_t g = round_up(guard, kOsPage);
  auto* m = new Mem();
  m->region_len = g + cap + g;
  void* p = mmap(nullptr, m->region_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    delete m;
    return error(std::string("cannot reserve linear memory: ") + std::strerror(errno));
  }
  m->region = static_cast<uint8_t*>(p);
  m->base = m->region + g;
  m->capacity = cap;
  if (minimum && mprotect(m->base, round_up(minimum, kOsPage), PROT_READ | PROT_WRITE) != 0) {
    int e = errno;
    munmap(m->region, m->region_len);
    delete m;
    return error(std::string("cannot commit linear memory: ") + std::strerror(e));
  }
  m->size = minimum;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    g_mems[reinterpret_cast<uintptr_t>(m->base)] = m;
  }
  ret->env = m;
  ret->get_memory = get_memory;
  ret->grow_memory = grow_memory;
  ret->finalizer = free_memory;
  return nullptr;
}

void close_fd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

bool write_all(int fd, const void* p, size_t n, uint64_t off) {
  const char* c = static_cast<const char*>(p);
  while (n) {
    ssize_t w = pwrite(fd, c, n, static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
  return true;
}

bool read_all(int fd, void* p, size_t n, uint64_t off) {
  char* c = static_cast<char*>(p);
  while (n) {
    ssize_t r = pread(fd, c, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    c += r;
    n -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
  return true;
}

const PageDigest& zero_leaf() {
  static const PageDigest z = [] {
    std::vector<uint8_t> zeros(merkle::kPageSize, 0);
    return merkle::leaf_digest(zeros.data(), zeros.size());
  }();
  return z;
}

// A fresh memfd of `size` bytes, or throws.
int new_memfd(size_t size) {
  int fd = memfd_create("aocu-page-image", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) throw std::runtime_error(std::string("memfd_create: ") + std::strerror(errno));
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int e = errno;
    close(fd);
    throw std::runtime_error(std::string("memfd ftruncate: ") + std::strerror(e));
  }
  return fd;
}

// Seals a memfd whose writable shared mappings are all gone: its contents can never change again.
void seal(int fd) {
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0)
    throw std::runtime_error(std::string("cannot seal the page image: ") + std::strerror(errno));
}

constexpr char kMagic[4] = {'A', 'O', 'P', 'I'};
constexpr uint32_t kFileVersion = 1;
constexpr uint64_t kMaxMemSize = uint64_t(1) << 40;
constexpr uint64_t kMaxMeta = uint64_t(256) << 20;

}  // namespace

void install_memory_creator(wasm_config_t* c) {
  // AOCU_ENGINE_MEMORY_CREATOR=0 keeps wasmtime's own memories (for comparison, or a kernel where this fails):
  // copy-on-write restores then copy the image instead (creator_owns() is false), still exactly.
  const char* env = getenv("AOCU_ENGINE_MEMORY_CREATOR");
  if (env && std::string(env) == "0") return;
  // wasmtime copies the struct; env is unused (the creator is process-wide).
  wasmtime_memory_creator_t mc{nullptr, new_memory, nullptr};
  api->wasmtime_config_host_memory_creator_set(c, &mc);
  // wasmtime's own copy-on-write initialisation needs its own mmap memories; data segments are copied.
  api->wasmtime_config_memory_init_cow_set(c, false);
}

bool creator_owns(const uint8_t* base, size_t len) {
  std::lock_guard<std::mutex> g(g_mu);
  auto it = g_mems.upper_bound(reinterpret_cast<uintptr_t>(base));
  if (it == g_mems.begin()) return false;
  --it;
  const Mem* m = it->second;
  return base >= m->base && base + len <= m->base + m->size;
}

PageImage::~PageImage() {
  if (view_) munmap(const_cast<uint8_t*>(view_), size_ ? size_ : 1);
  close_fd(fd_);
}

void PageImage::finish_view() {
  if (size_) {
    void* v = mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd_, static_cast<off_t>(off_));
    if (v == MAP_FAILED) throw std::runtime_error(std::string("cannot map the page image: ") + std::strerror(errno));
    view_ = static_cast<const uint8_t*>(v);
  }
  if (leaves_.empty()) {
    size_t n = (size_ + merkle::kPageSize - 1) / merkle::kPageSize;
    leaves_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      size_t off = i * merkle::kPageSize;
      leaves_[i] = merkle::leaf_digest(view_ + off, std::min<size_t>(merkle::kPageSize, size_ - off));
    }
  }
}

std::shared_ptr<PageImage> PageImage::from_encoded(const std::string& encoded) {
  uint64_t size = encoded_memory_size(encoded);
  if (size % kOsPage) throw SnapshotDataError("memory image size is not a multiple of the page size");
  std::shared_ptr<PageImage> img(new PageImage());
  img->size_ = size;
  img->fd_ = new_memfd(size);
  if (size) {
    void* w = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, img->fd_, 0);
    if (w == MAP_FAILED) throw std::runtime_error(std::string("cannot map a new page image: ") + std::strerror(errno));
    try {
      decode_memory(encoded, static_cast<uint8_t*>(w), size, 0);  // absent pages stay holes
    } catch (...) {
      munmap(w, size);
      throw;
    }
    munmap(w, size);
  }
  seal(img->fd_);
  img->finish_view();
  return img;
}

std::shared_ptr<PageImage> PageImage::from_memory(const uint8_t* mem, size_t size,
                                                  const std::vector<PageDigest>* known) {
  if (size % kOsPage) throw SnapshotDataError("memory size is not a multiple of the page size");
  std::shared_ptr<PageImage> img(new PageImage());
  img->size_ = size;
  const size_t pages = (size + merkle::kPageSize - 1) / merkle::kPageSize;
  if (known && known->size() != pages) throw std::invalid_argument("page image: wrong number of leaf digests");
  img->fd_ = new_memfd(size);
  // write() only the non-zero pages: the rest stay holes of the memfd (no memory used)
  std::vector<PageDigest> leaves(pages);
  for (size_t i = 0; i < leaves.size(); ++i) {
    size_t off = i * merkle::kPageSize, n = std::min<size_t>(merkle::kPageSize, size - off);
    leaves[i] = known ? (*known)[i] : merkle::leaf_digest(mem + off, n);
    if (leaves[i] != zero_leaf() && !write_all(img->fd_, mem + off, n, off))
      throw std::runtime_error(std::string("cannot fill the page image: ") + std::strerror(errno));
  }
  img->leaves_ = std::move(leaves);
  seal(img->fd_);
  img->finish_view();
  return img;
}

PageDigest PageImage::root() const { return merkle::root_from_leaves(size_, leaves_); }

void PageImage::map_into(uint8_t* base) const {
  if (!size_) return;
  if (!creator_owns(base, size_)) throw std::runtime_error("copy-on-write restore: memory is not creator-owned");
  void* p = mmap(base, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd_, static_cast<off_t>(off_));
  if (p == MAP_FAILED || p != base)
    throw std::runtime_error(std::string("copy-on-write restore: mmap: ") + std::strerror(errno));
}

void PageImage::write_file(const std::string& path, const std::string& meta) const {
  std::string hdr(kMagic, 4);
  uint64_t sz = size_, ml = meta.size();
  hdr.append(reinterpret_cast<const char*>(&kFileVersion), 4);
  hdr.append(reinterpret_cast<const char*>(&sz), 8);
  hdr.append(reinterpret_cast<const char*>(&ml), 8);
  hdr += meta;
  for (const PageDigest& d : leaves_) hdr.append(reinterpret_cast<const char*>(d.data()), d.size());
  auto hd = hash::sha256(reinterpret_cast<const uint8_t*>(hdr.data()), hdr.size());
  hdr.append(reinterpret_cast<const char*>(hd.data()), hd.size());
  const uint64_t data_off = round_up(hdr.size(), kOsPage);
  hdr.resize(data_off, '\0');
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot create " + tmp + ": " + std::strerror(errno));
  bool ok = write_all(fd, hdr.data(), hdr.size(), 0);
  for (size_t i = 0; ok && i < leaves_.size(); ++i) {
    if (leaves_[i] == zero_leaf()) continue;  // a hole
    size_t off = i * merkle::kPageSize, n = std::min<size_t>(merkle::kPageSize, size_ - off);
    ok = write_all(fd, view_ + off, n, data_off + off);
  }
  ok = ok && ftruncate(fd, static_cast<off_t>(data_off + size_)) == 0 && fsync(fd) == 0;
  int e = errno;
  close(fd);
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) e = errno;
    unlink(tmp.c_str());
    throw std::runtime_error("cannot write page image " + path + ": " + std::strerror(e));
  }
  // make the rename itself durable (best effort: the file is complete either way)
  const size_t slash = path.find_last_of('/');
  int dfd = ::open(slash == std::string::npos ? "." : path.substr(0, slash ? slash : 1).c_str(),
                   O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
}

std::shared_ptr<PageImage> PageImage::open(const std::string& path, bool verify) {
  std::shared_ptr<PageImage> img(new PageImage());
  img->file_backed_ = true;
  img->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (img->fd_ < 0) throw SnapshotDataError("cannot open page image " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (fstat(img->fd_, &st) != 0) throw SnapshotDataError("cannot stat page image " + path);
  const uint64_t flen = static_cast<uint64_t>(st.st_size);
  char fixed[24];
  if (flen < sizeof fixed || !read_all(img->fd_, fixed, sizeof fixed, 0))
    throw SnapshotDataError("page image " + path + " is truncated (" + std::to_string(flen) + " bytes)");
  if (std::memcmp(fixed, kMagic, 4) != 0) throw SnapshotDataError("page image " + path + ": bad magic");
  uint32_t ver;
  uint64_t size, ml;
  std::memcpy(&ver, fixed + 4, 4);
  std::memcpy(&size, fixed + 8, 8);
  std::memcpy(&ml, fixed + 16, 8);
  if (ver != kFileVersion)
    throw SnapshotDataError("page image " + path + ": unsupported version " + std::to_string(ver));
  if (size > kMaxMemSize || size % kOsPage || ml > kMaxMeta)
    throw SnapshotDataError("page image " + path + ": implausible header sizes");
  const uint64_t pages = (size + merkle::kPageSize - 1) / merkle::kPageSize;
  const uint64_t hlen = 24 + ml + 32 * pages, data_off = round_up(hlen + 32, kOsPage);
  if (flen != data_off + size)
    throw SnapshotDataError("page image " + path + " is " + (flen < data_off + size ? "truncated" : "too long") +
                            " (" + std::to_string(flen) + " bytes, expected " + std::to_string(data_off + size) + ")");
  std::string hdr(hlen + 32, '\0');
  if (!read_all(img->fd_, hdr.data(), hdr.size(), 0)) throw SnapshotDataError("cannot read page image " + path);
  auto hd = hash::sha256(reinterpret_cast<const uint8_t*>(hdr.data()), hlen);
  if (std::memcmp(hd.data(), hdr.data() + hlen, 32) != 0)
    throw SnapshotDataError("page image " + path + ": header digest mismatch (altered or corrupt)");
  img->meta_ = hdr.substr(24, ml);
  img->leaves_.resize(pages);
  for (uint64_t i = 0; i < pages; ++i) std::memcpy(img->leaves_[i].data(), hdr.data() + 24 + ml + 32 * i, 32);
  img->size_ = size;
  img->off_ = data_off;
  img->finish_view();
  if (verify) {
    for (uint64_t i = 0; i < pages; ++i) {
      size_t off = i * merkle::kPageSize, n = std::min<size_t>(merkle::kPageSize, size - off);
      if (merkle::leaf_digest(img->view_ + off, n) != img->leaves_[i])
        throw SnapshotDataError("page image " + path + ": page " + std::to_string(i) +
                                " does not match its digest (altered or corrupt)");
    }
  }
  return img;
}

}  // namespace aocu::engine
