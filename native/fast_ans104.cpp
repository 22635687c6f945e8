// Hot-path ANS-104 work for ed25519 items (signature types 2 and 4), bound as `cu._native.fast`: one call
// deep-hashes an item's fields and verifies or signs it, with the GIL released, instead of a Python list, a
// deep-hash call, a key object per verification and the Python tag encoder. The Python codec
// (cu/codec/ans104.py) stays the reference: the results are byte-identical (tests/test_fast_native.py), and
// anything outside these fast paths (other signature types, tags over the limits) is left to it.
// ed25519 goes through libsodium, which verifies in about half of OpenSSL 3's time and signs in about half
// (deterministic signatures: the same bytes as OpenSSL's); what libsodium refuses OpenSSL decides (see
// ed25519_verify), so the signatures accepted are OpenSSL's, as in the Python codec.
// SHA384_Init and friends are deprecated in OpenSSL 3 but kept (see Sha384 below).
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pybind11/pybind11.h>
#include <sodium.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "hash.h"
#include "py_modules.h"

namespace py = pybind11;
using aocu::hash::Digest48;

namespace {

// DEFAULT tag limits of cu/codec/tags.py: the fast encoder declines (returns None) beyond them, so that the
// Python encoder raises its own error.
constexpr size_t kMaxTagBytes = 4096;
constexpr size_t kMaxName = 3072;
constexpr size_t kMaxValue = 3072;

std::string_view view_of(const py::handle& obj) {
  if (obj.is_none()) return {};
  if (PyBytes_Check(obj.ptr())) {
    return {PyBytes_AS_STRING(obj.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(obj.ptr()))};
  }
  throw py::type_error("fast: expected bytes or None");
}

const uint8_t* u8(std::string_view s) { return reinterpret_cast<const uint8_t*>(s.data()); }

// SHA-384 through OpenSSL's low-level interface: the ~33 hashes of an item's deep hash are short, and EVP (OpenSSL
// 3) spends more per call on provider dispatch than on hashing them (~1.5 us one-shot, ~0.75 us with a fetched
// digest and a reused context, ~0.5 us here, measured with 96-byte inputs).
class Sha384 {
 public:
  Digest48 operator()(std::string_view a, std::string_view b = {}) {
    SHA512_CTX c;
    Digest48 out{};
    SHA384_Init(&c);
    SHA384_Update(&c, a.data(), a.size());
    if (!b.empty()) SHA384_Update(&c, b.data(), b.size());
    SHA384_Final(out.data(), &c);
    return out;
  }
};

std::string_view sv(const Digest48& d) { return {reinterpret_cast<const char*>(d.data()), d.size()}; }

Digest48 blob_hash(Sha384& h, std::string_view blob) {
  std::string tag = "blob" + std::to_string(blob.size());
  Digest48 t = h(tag);
  Digest48 d = h(blob);
  return h(sv(t), sv(d));
}

// deep_hash([b"dataitem", b"1", str(type), owner, target, anchor, raw_tags, data]) (ANS-104 signature data)
Digest48 item_deep_hash(int sig_type, std::string_view owner, std::string_view target, std::string_view anchor,
                        std::string_view raw_tags, std::string_view data) {
  Sha384 h;
  std::string type_text = std::to_string(sig_type);
  const std::string_view parts[8] = {"dataitem", "1", type_text, owner, target, anchor, raw_tags, data};
  Digest48 acc = h("list8");
  for (const auto& p : parts) {
    Digest48 child = blob_hash(h, p);
    acc = h(sv(acc), sv(child));
  }
  return acc;
}

// What a signer of the type signs: the deep hash itself, or its lowercase hex text (type 4, solana).
std::string signed_message(int sig_type, const Digest48& deep) {
  if (sig_type != 4) return std::string(reinterpret_cast<const char*>(deep.data()), deep.size());
  static const char* hex = "0123456789abcdef";
  std::string out(96, '0');
  for (size_t i = 0; i < 48; ++i) {
    out[2 * i] = hex[deep[i] >> 4];
    out[2 * i + 1] = hex[deep[i] & 15];
  }
  return out;
}

void check_type(int sig_type) {
  if (sig_type != 2 && sig_type != 4) throw py::value_error("fast: only ed25519 items (types 2 and 4)");
}

bool openssl_ed25519_verify(std::string_view owner, std::string_view msg, std::string_view sig) {
  EVP_PKEY* key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, u8(owner), 32);
  if (key == nullptr) {
    ERR_clear_error();
    return false;
  }
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  int rc = ctx != nullptr && EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, key) == 1
               ? EVP_DigestVerify(ctx, u8(sig), sig.size(), u8(msg), msg.size())
               : -1;
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(key);
  if (rc != 1) ERR_clear_error();
  return rc == 1;
}

// libsodium first; a signature it refuses goes to OpenSSL, whose answer stands. Both check the same cofactorless
// equation over the same bytes, and libsodium only adds refusals (small-order or non-canonical points), so every
// signature it accepts OpenSSL accepts too: the answer is always OpenSSL's, and a valid signature (all real
// traffic) costs one libsodium verification.
bool ed25519_verify(std::string_view owner, std::string_view msg, std::string_view sig) {
  if (owner.size() != 32 || sig.size() != 64) return false;
  if (crypto_sign_verify_detached(u8(sig), u8(msg), msg.size(), u8(owner)) == 0) return true;
  return openssl_ed25519_verify(owner, msg, sig);
}

void append_zigzag(std::string& out, int64_t n) {
  uint64_t m = (static_cast<uint64_t>(n) << 1) ^ static_cast<uint64_t>(n >> 63);
  while (m >= 0x80) {
    out.push_back(static_cast<char>((m & 0x7F) | 0x80));
    m >>= 7;
  }
  out.push_back(static_cast<char>(m));
}

std::optional<std::string_view> text_or_bytes(const py::handle& obj) {
  if (PyBytes_Check(obj.ptr())) return view_of(obj);
  if (PyUnicode_Check(obj.ptr())) {
    Py_ssize_t n = 0;
    const char* p = PyUnicode_AsUTF8AndSize(obj.ptr(), &n);
    if (p == nullptr) {
      PyErr_Clear();  // lone surrogates: the Python encoder names the error
      return std::nullopt;
    }
    return std::string_view(p, static_cast<size_t>(n));
  }
  return std::nullopt;
}

// cu.codec.tags.encode_tags(tags) under DEFAULT limits, or nullopt where the Python encoder must decide (a limit
// exceeded, a value neither str nor bytes, a malformed pair).
std::optional<std::string> encode_tags(const py::handle& tags) {
  if (!PyList_Check(tags.ptr()) && !PyTuple_Check(tags.ptr())) return std::nullopt;
  py::sequence seq = py::reinterpret_borrow<py::sequence>(tags);
  size_t count = seq.size();
  std::string out;
  if (count == 0) return out;
  append_zigzag(out, static_cast<int64_t>(count));
  for (size_t i = 0; i < count; ++i) {
    py::object pair = seq[i];
    if (!PyTuple_Check(pair.ptr()) || PyTuple_GET_SIZE(pair.ptr()) != 2) return std::nullopt;
    auto name = text_or_bytes(PyTuple_GET_ITEM(pair.ptr(), 0));
    auto value = text_or_bytes(PyTuple_GET_ITEM(pair.ptr(), 1));
    if (!name || !value || name->size() > kMaxName || value->size() > kMaxValue) return std::nullopt;
    append_zigzag(out, static_cast<int64_t>(name->size()));
    out.append(*name);
    append_zigzag(out, static_cast<int64_t>(value->size()));
    out.append(*value);
    if (out.size() > kMaxTagBytes) return std::nullopt;
  }
  out.push_back('\0');
  if (out.size() > kMaxTagBytes) return std::nullopt;
  return out;
}

void put_u64le(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

// An ed25519 private key held by libsodium: signs ANS-104 items (type 2) without a Python round trip per step.
class Ed25519ItemSigner {
 public:
  explicit Ed25519ItemSigner(const py::bytes& private_raw) {
    std::string_view k = view_of(private_raw);
    if (k.size() != 32) throw py::value_error("fast.Ed25519ItemSigner: the private key must be 32 raw bytes");
    uint8_t pub[crypto_sign_PUBLICKEYBYTES];
    crypto_sign_seed_keypair(pub, secret_.data(), u8(k));   // cannot fail for a 32-byte seed
    owner_.assign(reinterpret_cast<const char*>(pub), sizeof pub);
  }
  ~Ed25519ItemSigner() { sodium_memzero(secret_.data(), secret_.size()); }
  Ed25519ItemSigner(const Ed25519ItemSigner&) = delete;
  Ed25519ItemSigner& operator=(const Ed25519ItemSigner&) = delete;

  py::bytes owner() const { return py::bytes(owner_); }

  // The 64-byte ed25519 signature of `message` (RFC 8032, the bytes OpenSSL's would be).
  py::bytes sign(const py::bytes& message) const {
    std::string_view msg = view_of(message);
    std::array<uint8_t, crypto_sign_BYTES> sig{};
    {
      py::gil_scoped_release nogil;
      sign_into(sig.data(), msg);
    }
    return py::bytes(reinterpret_cast<const char*>(sig.data()), sig.size());
  }

  // (item bytes, signature, raw tags) of DataItem.create(key, data=, tags=, target=, anchor=).to_bytes(), or
  // None where the Python codec must build it (tags beyond the fast encoder's limits).
  py::object build_item(const py::handle& tags, const py::handle& target, const py::handle& anchor,
                        const py::handle& data) const {
    std::string_view tgt = view_of(target), anc = view_of(anchor), dat = view_of(data);
    if ((!tgt.empty() && tgt.size() != 32) || (!anc.empty() && anc.size() != 32))
      throw py::value_error("fast.build_item: target and anchor must be 32 bytes or None");
    auto raw_tags = encode_tags(tags);
    if (!raw_tags) return py::none();
    size_t n_tags = py::len(tags);
    std::string sig(64, '\0');
    std::string item;
    {
      py::gil_scoped_release nogil;
      Digest48 deep = item_deep_hash(2, owner_, tgt, anc, *raw_tags, dat);
      sign_into(reinterpret_cast<uint8_t*>(sig.data()), sv(deep));
      item.reserve(2 + 64 + 32 + 2 + 64 + 16 + raw_tags->size() + dat.size());
      item.push_back('\x02');
      item.push_back('\x00');
      item += sig;
      item += owner_;
      if (tgt.empty()) {
        item.push_back('\0');
      } else {
        item.push_back('\x01');
        item.append(tgt);
      }
      if (anc.empty()) {
        item.push_back('\0');
      } else {
        item.push_back('\x01');
        item.append(anc);
      }
      put_u64le(item, n_tags);
      put_u64le(item, raw_tags->size());
      item += *raw_tags;
      item.append(dat);
    }
    return py::make_tuple(py::bytes(item), py::bytes(sig), py::bytes(*raw_tags));
  }

 private:
  void sign_into(uint8_t* out, std::string_view msg) const {
    crypto_sign_detached(out, nullptr, u8(msg), msg.size(), secret_.data());   // cannot fail
  }

  std::array<uint8_t, crypto_sign_SECRETKEYBYTES> secret_{};   // seed || public key, as libsodium keeps it
  std::string owner_;
};

}  // namespace

void aocu_register_fast(py::module_& m) {
  // libsodium picks its implementations and seeds its RNG once; it is thread-safe from then on
  if (sodium_init() < 0) throw std::runtime_error("libsodium could not be initialised");
  auto f = m.def_submodule("fast", "hot-path ANS-104 ed25519 items: deep-hash + verify/sign in one call");
  f.def(
      "verify_item",
      [](int sig_type, const py::bytes& signature, const py::bytes& owner, const py::handle& target,
         const py::handle& anchor, const py::bytes& raw_tags, const py::bytes& data) {
        check_type(sig_type);
        std::string_view sig = view_of(signature), own = view_of(owner), tgt = view_of(target),
                         anc = view_of(anchor), tags = view_of(raw_tags), dat = view_of(data);
        py::gil_scoped_release nogil;
        std::string msg = signed_message(sig_type, item_deep_hash(sig_type, own, tgt, anc, tags, dat));
        return ed25519_verify(own, msg, sig);
      },
      "DataItem.verify() for an ed25519 item (type 2, or 4 which signs the hex of the deep hash)");
  f.def(
      "ed25519_verify",
      [](const py::bytes& owner, const py::bytes& message, const py::bytes& signature) {
        std::string_view own = view_of(owner), msg = view_of(message), sig = view_of(signature);
        py::gil_scoped_release nogil;
        return ed25519_verify(own, msg, sig);
      },
      py::arg("owner"), py::arg("message"), py::arg("signature"),
      "cu.codec.wallet.ed25519_verify: the same verdict (OpenSSL's), libsodium's speed for valid signatures");
  f.def(
      "signature_data",
      [](int sig_type, const py::bytes& owner, const py::handle& target, const py::handle& anchor,
         const py::bytes& raw_tags, const py::bytes& data) {
        Digest48 d;
        {
          std::string_view own = view_of(owner), tgt = view_of(target), anc = view_of(anchor),
                           tags = view_of(raw_tags), dat = view_of(data);
          py::gil_scoped_release nogil;
          d = item_deep_hash(sig_type, own, tgt, anc, tags, dat);
        }
        return py::bytes(reinterpret_cast<const char*>(d.data()), d.size());
      },
      "DataItem.signature_data(): the ANS-104 deep hash of an item's fields");
  f.def(
      "encode_tags",
      [](const py::handle& tags) -> py::object {
        auto out = encode_tags(tags);
        return out ? py::object(py::bytes(*out)) : py::object(py::none());
      },
      "cu.codec.tags.encode_tags under DEFAULT limits, or None where the Python encoder must decide");
  py::class_<Ed25519ItemSigner>(f, "Ed25519ItemSigner")
      .def(py::init<const py::bytes&>(), py::arg("private_raw"))
      .def_property_readonly("owner", &Ed25519ItemSigner::owner)
      .def("sign", &Ed25519ItemSigner::sign, py::arg("message"))
      .def("build_item", &Ed25519ItemSigner::build_item, py::arg("tags"), py::arg("target"), py::arg("anchor"),
           py::arg("data"));
}
