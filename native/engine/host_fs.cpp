// Filesystem host functions: WASI fd_* and the emscripten __syscall_* imports over MemFs, the minimal
// deterministic in-memory filesystem (devices, /tmp, deterministic /dev/urandom), plus MemFs itself.
// See docs/ABI.md (host imports). Split out of host.cpp as the largest single area.
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "engine/host_internal.h"
#include "hash.h"

namespace aocu::engine {

namespace hostfn {

namespace {

std::string path_arg(const Mem& m, uint64_t p) { return MemFs::normalise(m.cstr(p, 4096)); }

void write_urandom(HostState* st, uint8_t* dst, size_t n) {
  // Deterministic /dev/urandom: SHA-256(key || counter) blocks, key = SHA-256("aocu/urandom/v1\0" || message
  // JSON) of the message being handled, counter restarting at 0 per message (see cu/engine docs).
  if (st->urandom_key.empty()) {
    std::string seed("aocu/urandom/v1", 16);
    if (st->cur_msg) seed += *st->cur_msg;
    auto k = aocu::hash::sha256(reinterpret_cast<const uint8_t*>(seed.data()), seed.size());
    st->urandom_key.assign(reinterpret_cast<const char*>(k.data()), k.size());
    st->urandom_ctr = 0;
  }
  while (n) {
    uint8_t buf[40];
    std::memcpy(buf, st->urandom_key.data(), std::min<size_t>(32, st->urandom_key.size()));
    if (st->urandom_key.size() < 32) std::memset(buf + st->urandom_key.size(), 0, 32 - st->urandom_key.size());
    std::memcpy(buf + 32, &st->urandom_ctr, 8);
    ++st->urandom_ctr;
    auto d = aocu::hash::sha256(buf, sizeof buf);
    size_t k = std::min<size_t>(n, d.size());
    std::memcpy(dst, d.data(), k);
    dst += k;
    n -= k;
  }
}

int32_t fs_open(HostState* st, const std::string& path, int32_t flags) {
  MemFs& fs = st->fs;
  constexpr int32_t O_CREAT = 0100, O_EXCL = 0200, O_TRUNC = 01000, O_DIRECTORY = 0200000;
  bool writing = (flags & 3) != 0;
  auto it = fs.nodes.find(path);
  if (it == fs.nodes.end()) {
    if (!(flags & O_CREAT)) return -E_NOENT;
    if (!fs.parent_is_dir(path)) return -E_NOENT;
    fs.nodes[path] = MemFs::Node{};
  } else {
    if ((flags & O_CREAT) && (flags & O_EXCL)) return -E_EXIST;
    if (it->second.dir && writing) return -E_ISDIR;
    if (!it->second.dir && (flags & O_DIRECTORY)) return -E_NOTDIR;
    if (!it->second.dir && (flags & O_TRUNC) && writing && path.rfind("/dev/", 0) != 0) fs.resize(it->second, 0);
  }
  int32_t fd = fs.alloc_fd();
  if (fd < 0) return -E_NOSYS;
  fs.fds[fd] = MemFs::Fd{path, 0, flags};
  return fd;
}

void write_stat(HostState* st, const Mem& m, uint64_t buf, bool dir, uint64_t size, bool chr) {
  // emscripten 3.1 doStat layout (wasm32); wasm64 writes mode and size only (see engine docs)
  uint32_t mode = dir ? 040777 : chr ? 020666 : 0100666;
  if (!st->mem64) {
    std::memset(m.at(buf, 96), 0, 96);
    m.w32(buf + 4, mode);
    m.w32(buf + 8, 1);
    m.w64(buf + 24, size);
    m.w32(buf + 32, 4096);
    m.w32(buf + 36, static_cast<uint32_t>((size + 511) / 512));
  } else {
    m.w32(buf + 4, mode);
    m.w64(buf + 32, size);
  }
}

int32_t stat_path(HostState* st, const Mem& m, const std::string& path, uint64_t buf) {
  auto it = st->fs.nodes.find(path);
  if (it == st->fs.nodes.end()) return -E_NOENT;
  write_stat(st, m, buf, it->second.dir, it->second.data.size(), path.rfind("/dev/", 0) == 0);
  return 0;
}

int32_t fs_rmdir(HostState* st, const std::string& p) {
  auto it = st->fs.nodes.find(p);
  if (it == st->fs.nodes.end()) return -E_NOENT;
  if (!it->second.dir) return -E_NOTDIR;
  if (p == "/") return -E_INVAL;
  auto next = std::next(it);
  if (next != st->fs.nodes.end() && next->first.rfind(p + "/", 0) == 0) return -E_NOTEMPTY;
  st->fs.nodes.erase(it);
  return 0;
}

}  // namespace

// ---- fd_* and MEMFS

void h_openat(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(0);  // format-1 glue stub (returns fd 0)
  Mem m(st);
  a.ret(fs_open(st, path_arg(m, a.u(1)), a.i(2)));
}

void h_fd_write(HostState* st, const Args& a) {
  Mem m(st);
  int32_t fd = a.i(0);
  uint64_t iovs = a.u(1), n = a.u(2), out = a.u(3);
  size_t isz = st->mem64 ? 16 : 8;
  uint64_t total = 0;
  MemFs::Fd* f = nullptr;
  MemFs::Node* node = nullptr;
  if (st->family != F1 && fd > 2) {
    auto it = st->fs.fds.find(fd);
    if (it == st->fs.fds.end()) return a.ret(E_BADF);
    f = &it->second;
    auto nit = st->fs.nodes.find(f->path);
    if (nit == st->fs.nodes.end() || nit->second.dir) return a.ret(E_BADF);
    if (f->path.rfind("/dev/", 0) != 0) node = &nit->second;
  }
  if (n > (1u << 20)) return a.ret(E_INVAL);
  for (uint64_t k = 0; k < n; ++k) {
    uint64_t p = m.rptr(iovs + k * isz, st->mem64);
    uint64_t len = m.rptr(iovs + k * isz + isz / 2, st->mem64);
    m.check(p, len);
    if (node) {
      constexpr int32_t O_APPEND = 02000;
      if (f->flags & O_APPEND) f->pos = node->data.size();
      if (node->data.size() < f->pos + len && !st->fs.resize(*node, f->pos + len)) {
        m.wptr(out, total, st->mem64);
        return a.ret(total ? 0 : 51);  // ENOSPC: MEMFS is capped (host memory)
      }
      std::memcpy(&node->data[f->pos], m.base + p, len);
      f->pos += len;
    }
    total += len;  // stdout/stderr/devices: consumed and discarded (the loader mutes console during handle)
  }
  m.wptr(out, total, st->mem64);
  a.ret(0);
}

void h_fd_read(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(E_NOSYS);
  Mem m(st);
  int32_t fd = a.i(0);
  uint64_t iovs = a.u(1), n = a.u(2), out = a.u(3);
  size_t isz = st->mem64 ? 16 : 8;
  uint64_t total = 0;
  if (fd >= 0 && fd <= 2) {  // no stdin: EOF
    m.wptr(out, 0, st->mem64);
    return a.ret(0);
  }
  auto it = st->fs.fds.find(fd);
  if (it == st->fs.fds.end()) return a.ret(E_BADF);
  MemFs::Fd& f = it->second;
  auto nit = st->fs.nodes.find(f.path);
  if (nit == st->fs.nodes.end()) return a.ret(E_BADF);
  if (nit->second.dir) return a.ret(E_ISDIR);
  bool random = f.path == "/dev/urandom" || f.path == "/dev/random";
  bool null = f.path == "/dev/null" || f.path == "/dev/tty";
  if (n > (1u << 20)) return a.ret(E_INVAL);
  for (uint64_t k = 0; k < n; ++k) {
    uint64_t p = m.rptr(iovs + k * isz, st->mem64);
    uint64_t len = m.rptr(iovs + k * isz + isz / 2, st->mem64);
    m.check(p, len);
    if (null) break;
    if (random) {
      write_urandom(st, m.base + p, len);
      total += len;
      continue;
    }
    const std::string& d = nit->second.data;
    if (f.pos >= d.size()) break;
    uint64_t k2 = std::min<uint64_t>(len, d.size() - f.pos);
    std::memcpy(m.base + p, d.data() + f.pos, k2);
    f.pos += k2;
    total += k2;
    if (k2 < len) break;
  }
  m.wptr(out, total, st->mem64);
  a.ret(0);
}

void h_fd_close(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(E_NOSYS);
  int32_t fd = a.i(0);
  if (fd >= 0 && fd <= 2) return a.ret(0);
  a.ret(st->fs.fds.erase(fd) ? 0 : E_BADF);
}

void h_fd_seek(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(E_SPIPE);
  Mem m(st);
  int32_t fd = a.i(0);
  int64_t off;
  int32_t whence;
  uint64_t out;
  if (a.nparams() == 5) {  // (fd, off_lo, off_hi, whence, newoff*)
    off = static_cast<int64_t>((static_cast<uint64_t>(static_cast<uint32_t>(a.i(2))) << 32) |
                               static_cast<uint32_t>(a.i(1)));
    whence = a.i(3);
    out = a.u(4);
  } else {
    off = a.s(1);
    whence = a.i(2);
    out = a.u(3);
  }
  if (fd >= 0 && fd <= 2) return a.ret(E_SPIPE);
  auto it = st->fs.fds.find(fd);
  if (it == st->fs.fds.end()) return a.ret(E_BADF);
  auto nit = st->fs.nodes.find(it->second.path);
  if (nit == st->fs.nodes.end()) return a.ret(E_BADF);
  int64_t base = whence == 0 ? 0 : whence == 1 ? static_cast<int64_t>(it->second.pos)
                                  : whence == 2 ? static_cast<int64_t>(nit->second.data.size()) : -1;
  if (base < 0 || base + off < 0) return a.ret(E_INVAL);
  it->second.pos = static_cast<uint64_t>(base + off);
  m.w64(out, it->second.pos);
  a.ret(0);
}

void h_fd_sync(HostState*, const Args& a) { a.ret(0); }

void h_fd_fdstat_get(HostState* st, const Args& a) {
  Mem m(st);
  int32_t fd = a.i(0);
  uint8_t type = 4;
  if (fd >= 0 && fd <= 2) {
    type = 2;
  } else {
    auto it = st->fs.fds.find(fd);
    if (it == st->fs.fds.end()) return a.ret(E_BADF);
    if (st->fs.is_dir(it->second.path)) type = 3;
  }
  uint64_t p = a.u(1);
  std::memset(m.at(p, 24), 0, 24);
  m.at(p, 1)[0] = type;
  a.ret(0);
}

void h_stat64(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(0);
  Mem m(st);
  a.ret(stat_path(st, m, path_arg(m, a.u(0)), a.u(1)));
}

void h_fstat64(HostState* st, const Args& a) {
  Mem m(st);
  int32_t fd = a.i(0);
  if (fd >= 0 && fd <= 2) {
    write_stat(st, m, a.u(1), false, 0, true);
    return a.ret(0);
  }
  auto it = st->fs.fds.find(fd);
  if (it == st->fs.fds.end()) return a.ret(-E_BADF);
  a.ret(stat_path(st, m, it->second.path, a.u(1)));
}

void h_newfstatat(HostState* st, const Args& a) {
  Mem m(st);
  a.ret(stat_path(st, m, path_arg(m, a.u(1)), a.u(2)));
}

void h_faccessat(HostState* st, const Args& a) {
  Mem m(st);
  a.ret(st->fs.exists(path_arg(m, a.u(1))) ? 0 : -E_NOENT);
}

void h_ok_path0(HostState* st, const Args& a) {  // chmod: path must exist
  Mem m(st);
  a.ret(st->fs.exists(path_arg(m, a.u(0))) ? 0 : -E_NOENT);
}

void h_ok_path1(HostState* st, const Args& a) {  // utimensat(dirfd, path, ...)
  Mem m(st);
  a.ret(st->fs.exists(path_arg(m, a.u(1))) ? 0 : -E_NOENT);
}

void h_zero(HostState*, const Args& a) { a.ret(0); }

void h_fcntl(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(0);
  int32_t fd = a.i(0), cmd = a.i(1);
  bool known = (fd >= 0 && fd <= 2) || st->fs.fds.count(fd);
  if (!known) return a.ret(-E_BADF);
  switch (cmd) {
    case 0: {  // F_DUPFD
      int32_t min = 0;
      Mem m(st);
      // the varargs pointer holds the minimum fd
      min = static_cast<int32_t>(m.u32(a.u(2)));
      if (fd <= 2) return a.ret(-E_INVAL);
      int32_t nfd = st->fs.alloc_fd(std::max(min, 3));
      st->fs.fds[nfd] = st->fs.fds[fd];
      return a.ret(nfd);
    }
    case 1: case 2: case 4: case 12: case 13: case 14: return a.ret(0);
    case 3: return a.ret(fd <= 2 ? 2 : st->fs.fds[fd].flags);
    default: return a.ret(-E_INVAL);
  }
}

void h_ioctl(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(0);
  int32_t fd = a.i(0);
  if (fd >= 0 && fd <= 2) return a.ret(0);  // tty
  a.ret(st->fs.fds.count(fd) ? -E_NOTTY : -E_BADF);
}

void h_dup3(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(0);
  int32_t fd = a.i(0), nfd = a.i(1);
  if (fd == nfd || nfd < 0 || nfd > 4096) return a.ret(-E_INVAL);
  if (fd <= 2 && fd >= 0) return a.ret(-E_INVAL);
  auto it = st->fs.fds.find(fd);
  if (it == st->fs.fds.end()) return a.ret(-E_BADF);
  st->fs.fds[nfd] = it->second;
  a.ret(nfd);
}

void h_unlinkat(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(0);
  Mem m(st);
  std::string p = path_arg(m, a.u(1));
  if (a.i(2) & 0x200) return a.ret(fs_rmdir(st, p));  // AT_REMOVEDIR
  auto it = st->fs.nodes.find(p);
  if (it == st->fs.nodes.end()) return a.ret(-E_NOENT);
  if (it->second.dir) return a.ret(-E_ISDIR);
  st->fs.bytes -= it->second.data.size();
  st->fs.nodes.erase(it);
  a.ret(0);
}

void h_rmdir(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(0);
  Mem m(st);
  a.ret(fs_rmdir(st, path_arg(m, a.u(0))));
}

void h_renameat(HostState* st, const Args& a) {
  if (st->family == F1) return a.ret(0);
  Mem m(st);
  std::string from = path_arg(m, a.u(1)), to = path_arg(m, a.u(3));
  auto it = st->fs.nodes.find(from);
  if (it == st->fs.nodes.end()) return a.ret(-E_NOENT);
  if (!st->fs.parent_is_dir(to)) return a.ret(-E_NOENT);
  if (from == to) return a.ret(0);
  if (to.rfind(from + "/", 0) == 0) return a.ret(-E_INVAL);
  std::vector<std::pair<std::string, MemFs::Node>> moved;
  for (auto i = st->fs.nodes.begin(); i != st->fs.nodes.end();) {
    if (i->first == from || i->first.rfind(from + "/", 0) == 0) {
      moved.emplace_back(to + i->first.substr(from.size()), std::move(i->second));
      i = st->fs.nodes.erase(i);
    } else {
      ++i;
    }
  }
  for (auto& kv : moved) {
    auto old = st->fs.nodes.find(kv.first);
    if (old != st->fs.nodes.end()) st->fs.bytes -= old->second.data.size();
    st->fs.nodes[kv.first] = std::move(kv.second);
  }
  for (auto& kv : st->fs.fds)
    if (kv.second.path == from || kv.second.path.rfind(from + "/", 0) == 0)
      kv.second.path = to + kv.second.path.substr(from.size());
  a.ret(0);
}

void h_mkdirat(HostState* st, const Args& a) {
  Mem m(st);
  std::string p = path_arg(m, a.u(1));
  if (st->fs.exists(p)) return a.ret(-E_EXIST);
  if (!st->fs.parent_is_dir(p)) return a.ret(-E_NOENT);
  st->fs.nodes[p] = MemFs::Node{true, {}};
  a.ret(0);
}

void h_readlinkat(HostState* st, const Args& a) {
  Mem m(st);
  a.ret(st->fs.exists(path_arg(m, a.u(1))) ? -E_INVAL : -E_NOENT);
}

void h_getcwd(HostState* st, const Args& a) {
  Mem m(st);
  if (a.u(1) < 2) return a.ret(-E_RANGE);
  std::memcpy(m.at(a.u(0), 2), "/", 2);
  a.ret(2);
}

void h_ftruncate(HostState* st, const Args& a) {
  int64_t len = a.nparams() == 3 ? static_cast<int64_t>((static_cast<uint64_t>(static_cast<uint32_t>(a.i(2))) << 32) |
                                                        static_cast<uint32_t>(a.i(1)))
                                 : a.s(1);
  auto it = st->fs.fds.find(a.i(0));
  if (it == st->fs.fds.end()) return a.ret(-E_BADF);
  if (len < 0 || len > (int64_t(1) << 30)) return a.ret(-E_INVAL);
  auto nit = st->fs.nodes.find(it->second.path);
  if (nit == st->fs.nodes.end() || nit->second.dir) return a.ret(-E_INVAL);
  a.ret(st->fs.resize(nit->second, static_cast<uint64_t>(len)) ? 0 : -51);
}

}  // namespace hostfn

// ---------------------------------------------------------------- MemFs

void MemFs::init(bool with_data_dir) {
  nodes.clear();
  fds.clear();
  bytes = 0;
  for (const char* d : {"/", "/tmp", "/home", "/home/web_user", "/dev", "/dev/shm"}) nodes[d] = Node{true, {}};
  for (const char* f : {"/dev/null", "/dev/tty", "/dev/random", "/dev/urandom"}) nodes[f] = Node{};
  if (with_data_dir) nodes["/data"] = Node{true, {}};
}

std::string MemFs::normalise(const std::string& in) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= in.size()) {
    size_t j = in.find('/', i);
    if (j == std::string::npos) j = in.size();
    std::string seg = in.substr(i, j - i);
    if (seg == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!seg.empty() && seg != ".") {
      parts.push_back(seg);
    }
    i = j + 1;
  }
  std::string out;
  for (auto& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;  // relative paths resolve against cwd "/"
}

bool MemFs::resize(Node& n, uint64_t size) {
  uint64_t cur = n.data.size();
  if (size > cur && bytes + (size - cur) > kMaxBytes) return false;
  n.data.resize(static_cast<size_t>(size));
  bytes = bytes - cur + size;
  return true;
}

bool MemFs::is_dir(const std::string& p) const {
  auto it = nodes.find(p);
  return it != nodes.end() && it->second.dir;
}

bool MemFs::parent_is_dir(const std::string& p) const {
  size_t k = p.rfind('/');
  return is_dir(k == 0 ? "/" : p.substr(0, k));
}

int32_t MemFs::alloc_fd(int32_t min_fd) const {
  for (int32_t fd = min_fd; fd < 4096; ++fd)
    if (!fds.count(fd)) return fd;
  return -1;
}

}  // namespace aocu::engine
