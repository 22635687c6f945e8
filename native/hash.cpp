#include "hash.h"

#include <openssl/evp.h>

#include <cstring>
#include <stdexcept>

namespace aocu::hash {
namespace {

const EVP_MD* md_for(Hasher::Alg alg) {
  switch (alg) {
    case Hasher::Alg::SHA256: return EVP_sha256();
    case Hasher::Alg::SHA384: return EVP_sha384();
    case Hasher::Alg::SHA512: return EVP_sha512();
  }
  return EVP_sha256();
}

template <size_t N>
std::array<uint8_t, N> one_shot(const EVP_MD* md, const uint8_t* data, size_t len) {
  std::array<uint8_t, N> out{};
  unsigned int olen = 0;
  // EVP_Digest cannot fail for these digests short of allocation failure.
  if (EVP_Digest(data, len, out.data(), &olen, md, nullptr) != 1 || olen != N) {
    throw std::runtime_error("EVP_Digest failed");
  }
  return out;
}

// Keccak-f[1600], straightforward reference form: correctness over speed (inputs are small).
constexpr uint64_t kRC[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL, 0x8000000080008000ULL,
    0x000000000000808bULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008aULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800aULL, 0x800000008000000aULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL};
constexpr int kRot[5][5] = {
    {0, 36, 3, 41, 18}, {1, 44, 10, 45, 2}, {62, 6, 43, 15, 61}, {28, 55, 25, 21, 56}, {27, 20, 39, 8, 14}};

inline uint64_t rotl(uint64_t v, int n) { return n == 0 ? v : (v << n) | (v >> (64 - n)); }

void keccak_f(uint64_t a[25]) {
  for (int round = 0; round < 24; ++round) {
    uint64_t c[5], d[5], b[25];
    for (int x = 0; x < 5; ++x) c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20];
    for (int x = 0; x < 5; ++x) d[x] = c[(x + 4) % 5] ^ rotl(c[(x + 1) % 5], 1);
    for (int i = 0; i < 25; ++i) a[i] ^= d[i % 5];
    for (int x = 0; x < 5; ++x)
      for (int y = 0; y < 5; ++y) b[y + 5 * ((2 * x + 3 * y) % 5)] = rotl(a[x + 5 * y], kRot[x][y]);
    for (int x = 0; x < 5; ++x)
      for (int y = 0; y < 5; ++y)
        a[x + 5 * y] = b[x + 5 * y] ^ ((~b[(x + 1) % 5 + 5 * y]) & b[(x + 2) % 5 + 5 * y]);
    a[0] ^= kRC[round];
  }
}

void deep_hash_into(const DeepHashNode& node, Digest48& out) {
  std::string tag = (node.is_list ? "list" : "blob") +
                    std::to_string(node.is_list ? node.items.size() : node.blob.size());
  Digest48 tag_hash = sha384(reinterpret_cast<const uint8_t*>(tag.data()), tag.size());
  if (!node.is_list) {
    Digest48 data_hash = sha384(reinterpret_cast<const uint8_t*>(node.blob.data()), node.blob.size());
    uint8_t both[96];
    std::memcpy(both, tag_hash.data(), 48);
    std::memcpy(both + 48, data_hash.data(), 48);
    out = sha384(both, sizeof both);
    return;
  }
  Digest48 acc = tag_hash;
  for (const auto& item : node.items) {
    Digest48 child;
    deep_hash_into(item, child);
    uint8_t both[96];
    std::memcpy(both, acc.data(), 48);
    std::memcpy(both + 48, child.data(), 48);
    acc = sha384(both, sizeof both);
  }
  out = acc;
}

Digest32 sha256_concat(const std::string& a, const std::string& b) {
  Hasher h(Hasher::Alg::SHA256);
  h.update(reinterpret_cast<const uint8_t*>(a.data()), a.size());
  h.update(reinterpret_cast<const uint8_t*>(b.data()), b.size());
  auto v = h.finish();
  Digest32 out{};
  std::memcpy(out.data(), v.data(), 32);
  return out;
}

}  // namespace

Digest32 sha256(const uint8_t* d, size_t n) { return one_shot<32>(EVP_sha256(), d, n); }
Digest48 sha384(const uint8_t* d, size_t n) { return one_shot<48>(EVP_sha384(), d, n); }
Digest64 sha512(const uint8_t* d, size_t n) { return one_shot<64>(EVP_sha512(), d, n); }

Digest32 keccak256(const uint8_t* data, size_t len) {
  constexpr size_t rate = 136;  // 1088-bit rate for 256-bit output
  uint64_t st[25] = {0};
  auto absorb_block = [&](const uint8_t* blk) {
    for (size_t i = 0; i < rate / 8; ++i) {
      uint64_t lane = 0;
      for (int b = 7; b >= 0; --b) lane = (lane << 8) | blk[i * 8 + b];
      st[i] ^= lane;
    }
    keccak_f(st);
  };
  while (len >= rate) {
    absorb_block(data);
    data += rate;
    len -= rate;
  }
  uint8_t last[rate] = {0};
  std::memcpy(last, data, len);
  last[len] ^= 0x01;
  last[rate - 1] ^= 0x80;
  absorb_block(last);
  Digest32 out{};
  for (size_t i = 0; i < 32; ++i) out[i] = static_cast<uint8_t>(st[i / 8] >> (8 * (i % 8)));
  return out;
}

Hasher::Hasher(Alg alg) : ctx_(EVP_MD_CTX_new()), alg_(alg) {
  if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), md_for(alg_), nullptr) != 1) {
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
    throw std::runtime_error("EVP_DigestInit_ex failed");
  }
}

Hasher::~Hasher() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Hasher::update(const uint8_t* data, size_t len) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, len);
}

std::vector<uint8_t> Hasher::finish() {
  std::vector<uint8_t> out(EVP_MAX_MD_SIZE);
  unsigned int olen = 0;
  auto* c = static_cast<EVP_MD_CTX*>(ctx_);
  EVP_DigestFinal_ex(c, out.data(), &olen);
  out.resize(olen);
  EVP_DigestInit_ex(c, md_for(alg_), nullptr);
  return out;
}

Digest48 deep_hash(const DeepHashNode& node) {
  Digest48 out{};
  deep_hash_into(node, out);
  return out;
}

Digest32 su_hash_chain(const std::string& prev_assignment_id_raw, const std::string& prev_hash_chain_raw) {
  return sha256_concat(prev_assignment_id_raw, prev_hash_chain_raw);
}

Digest32 hashpath_step(const std::string& prev_base_raw, const std::string& msg2_id_raw) {
  return sha256_concat(prev_base_raw, msg2_id_raw);
}

}  // namespace aocu::hash
