// Python bindings for native/hash.*: bytes in, bytes out. The GIL is released around bulk hashing.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "hash.h"
#include "py_modules.h"

namespace py = pybind11;
using namespace aocu::hash;

namespace {

template <size_t N>
py::bytes to_bytes(const std::array<uint8_t, N>& d) {
  return py::bytes(reinterpret_cast<const char*>(d.data()), N);
}

template <typename Fn>
auto hash_buffer(const py::buffer& b, Fn fn) {
  py::buffer_info info = b.request();
  const auto* p = static_cast<const uint8_t*>(info.ptr);
  size_t n = static_cast<size_t>(info.size * info.itemsize);
  py::gil_scoped_release nogil;
  return fn(p, n);
}

constexpr int kMaxDeepHashDepth = 64;  // guards the C++ stack against hostile nesting

DeepHashNode to_node(const py::handle& obj, int depth) {
  if (depth > kMaxDeepHashDepth) throw py::value_error("deep_hash: nesting deeper than 64 levels");
  DeepHashNode n;
  if (py::isinstance<py::bytes>(obj) || py::isinstance<py::bytearray>(obj) ||
      py::isinstance<py::memoryview>(obj)) {
    py::buffer_info info = py::reinterpret_borrow<py::buffer>(obj).request();
    n.blob.assign(static_cast<const char*>(info.ptr), static_cast<size_t>(info.size * info.itemsize));
    return n;
  }
  if (py::isinstance<py::str>(obj)) {
    n.blob = obj.cast<std::string>();  // UTF-8, as arbundles stringToBuffer does
    return n;
  }
  if (py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj)) {
    n.is_list = true;
    for (auto item : obj) n.items.push_back(to_node(item, depth + 1));
    return n;
  }
  throw py::type_error("deep_hash: items must be bytes, str, or a list/tuple of them");
}

std::string raw(const py::bytes& b) { return std::string(b); }

}  // namespace

void aocu_register_hash(py::module_& m) {
  auto h = m.def_submodule("hash", "SHA-2 (OpenSSL), keccak-256, ANS-104 deep-hash, SU hash chain, hashpaths");
  h.def("sha256", [](const py::buffer& b) { return to_bytes(hash_buffer(b, sha256)); });
  h.def("sha384", [](const py::buffer& b) { return to_bytes(hash_buffer(b, sha384)); });
  h.def("sha512", [](const py::buffer& b) { return to_bytes(hash_buffer(b, sha512)); });
  h.def("keccak256", [](const py::buffer& b) { return to_bytes(hash_buffer(b, keccak256)); });
  h.def(
      "deep_hash", [](const py::handle& obj) { return to_bytes(deep_hash(to_node(obj, 0))); },
      "ANS-104 deep hash (SHA-384) of bytes/str or nested lists of them");
  h.def(
      "su_hash_chain",
      [](const py::bytes& prev_assignment_id, const py::bytes& prev_hash_chain) {
        auto a = raw(prev_assignment_id), c = raw(prev_hash_chain);
        if (a.size() != 32 || (c.size() != 32 && !c.empty()))
          throw py::value_error("su_hash_chain: ids must be 32 raw bytes");
        return to_bytes(su_hash_chain(a, c));
      },
      "Legacy SU hash chain step: SHA-256(prev assignment id || prev hash chain), raw 32-byte inputs; "
      "pass the process id and b'' for the first message");
  h.def(
      "hashpath_step",
      [](const py::bytes& prev_base, const py::bytes& msg2_id) {
        return to_bytes(hashpath_step(raw(prev_base), raw(msg2_id)));
      },
      "HyperBEAM sha-256-chain hashpath step over raw bytes");
}
