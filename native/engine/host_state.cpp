// Serialisation of the persistent host state (counter clock, tempRet0, urandom key/counter, MEMFS files and
// open fds) that snapshots carry beside linear memory. Split out of host.cpp: snapshot I/O, no host functions.
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "engine/host.h"

namespace aocu::engine {

namespace {
void put_u64(std::string& o, uint64_t v) { o.append(reinterpret_cast<const char*>(&v), 8); }
void put_str(std::string& o, const std::string& s) {
  put_u64(o, s.size());
  o += s;
}
struct Reader {
  const std::string& s;
  size_t p = 0;
  uint64_t u64() {
    if (s.size() - p < 8) throw std::runtime_error("host state truncated");
    uint64_t v;
    std::memcpy(&v, s.data() + p, 8);
    p += 8;
    return v;
  }
  std::string str() {
    uint64_t n = u64();
    if (s.size() - p < n) throw std::runtime_error("host state truncated");
    std::string r = s.substr(p, n);
    p += n;
    return r;
  }
};
constexpr uint64_t kHostStateVersion = 1;
}  // namespace

std::string HostState::serialize() const {
  std::string o;
  put_u64(o, kHostStateVersion);
  put_u64(o, static_cast<uint32_t>(temp_ret0));
  uint64_t c;
  std::memcpy(&c, &clock, 8);
  put_u64(o, c);
  put_u64(o, urandom_ctr);
  put_str(o, urandom_key);
  put_u64(o, fs.nodes.size());
  for (auto& kv : fs.nodes) {
    put_str(o, kv.first);
    put_u64(o, kv.second.dir ? 1 : 0);
    put_str(o, kv.second.data);
  }
  put_u64(o, fs.fds.size());
  for (auto& kv : fs.fds) {
    put_u64(o, static_cast<uint32_t>(kv.first));
    put_str(o, kv.second.path);
    put_u64(o, kv.second.pos);
    put_u64(o, static_cast<uint32_t>(kv.second.flags));
  }
  return o;
}

void HostState::deserialize(const std::string& s) {
  Reader r{s};
  if (r.u64() != kHostStateVersion) throw std::runtime_error("unsupported host state version");
  temp_ret0 = static_cast<int32_t>(r.u64());
  uint64_t c = r.u64();
  std::memcpy(&clock, &c, 8);
  urandom_ctr = r.u64();
  urandom_key = r.str();
  MemFs nfs;
  uint64_t nn = r.u64();
  if (nn > (1u << 20)) throw std::runtime_error("host state: too many files");
  for (uint64_t k = 0; k < nn; ++k) {
    std::string path = r.str();
    bool dir = r.u64() != 0;
    nfs.nodes[path] = MemFs::Node{dir, r.str()};
    nfs.bytes += nfs.nodes[path].data.size();
    if (nfs.bytes > MemFs::kMaxBytes) throw std::runtime_error("host state: files exceed the MEMFS cap");
  }
  uint64_t nf = r.u64();
  if (nf > 4096) throw std::runtime_error("host state: too many fds");
  for (uint64_t k = 0; k < nf; ++k) {
    int32_t fd = static_cast<int32_t>(r.u64());
    MemFs::Fd f;
    f.path = r.str();
    f.pos = r.u64();
    f.flags = static_cast<int32_t>(r.u64());
    nfs.fds[fd] = f;
  }
  if (r.p != s.size()) throw std::runtime_error("host state has trailing bytes");
  fs = std::move(nfs);
}

}  // namespace aocu::engine
