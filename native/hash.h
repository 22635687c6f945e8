// Hash primitives shared by the engine (page-Merkle) and the Python bindings.
// Plain C++ over byte spans: no Python types here, so the engine can call them on its hot path.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace aocu::hash {

using Digest32 = std::array<uint8_t, 32>;
using Digest48 = std::array<uint8_t, 48>;
using Digest64 = std::array<uint8_t, 64>;

Digest32 sha256(const uint8_t* data, size_t len);
Digest48 sha384(const uint8_t* data, size_t len);
Digest64 sha512(const uint8_t* data, size_t len);
// Original Keccak-256 (pad 0x01), as Ethereum uses it; not FIPS-202 SHA3-256 (pad 0x06).
Digest32 keccak256(const uint8_t* data, size_t len);

// Incremental SHA-256/384 (OpenSSL EVP), RAII-owned context.
class Hasher {
 public:
  enum class Alg { SHA256, SHA384, SHA512 };
  explicit Hasher(Alg alg);
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void update(const uint8_t* data, size_t len);
  // Returns the digest and resets the context for reuse.
  std::vector<uint8_t> finish();

 private:
  void* ctx_;
  Alg alg_;
};

// ANS-104 deep-hash node: a blob or a list of nodes.
struct DeepHashNode {
  bool is_list = false;
  std::string blob;                 // bytes, when !is_list
  std::vector<DeepHashNode> items;  // when is_list
};
Digest48 deep_hash(const DeepHashNode& node);

// Legacy SU hash chain: SHA-256(prev_assignment_id_raw || prev_hash_chain_raw); first = SHA-256(process_id_raw).
Digest32 su_hash_chain(const std::string& prev_assignment_id_raw, const std::string& prev_hash_chain_raw);

// HyperBEAM sha-256-chain hashpath step: SHA-256(prev_base || msg2_id), both raw bytes.
Digest32 hashpath_step(const std::string& prev_base_raw, const std::string& msg2_id_raw);

}  // namespace aocu::hash
