// Python bindings for native/merkle.*: `cu._native.merkle.PageMerkle`. The GIL is released while hashing;
// the buffer export is held for the whole call so the memory cannot be resized underneath.
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>
#include <vector>

#include "merkle.h"
#include "py_modules.h"

namespace py = pybind11;
using aocu::merkle::Digest;
using aocu::merkle::PageMerkle;

namespace {

py::bytes to_bytes(const Digest& d) { return py::bytes(reinterpret_cast<const char*>(d.data()), d.size()); }

struct View {
  py::buffer_info info;
  const uint8_t* ptr;
  size_t len;
  explicit View(const py::buffer& b) : info(b.request()) {
    ptr = static_cast<const uint8_t*>(info.ptr);
    len = static_cast<size_t>(info.size * info.itemsize);
    for (py::ssize_t i = info.ndim - 1, expect = info.itemsize; i >= 0; --i) {
      if (info.strides[i] != expect) throw py::value_error("PageMerkle: buffer must be C-contiguous");
      expect *= info.shape[i];
    }
  }
};

PageMerkle::Method parse_method(const std::string& m) {
  if (m == "auto") return PageMerkle::Method::Auto;
  if (m == "shadow") return PageMerkle::Method::Shadow;
  throw py::value_error("PageMerkle: method must be 'auto' or 'shadow'");
}

}  // namespace

void aocu_register_merkle(py::module_& m) {
  auto mm = m.def_submodule("merkle", "Page-Merkle commitment over linear memory (64 KiB pages)");
  mm.attr("PAGE_SIZE") = aocu::merkle::kPageSize;
  py::class_<PageMerkle>(mm, "PageMerkle",
                         "Incremental page-Merkle commitment; see native/merkle.h for the exact definition")
      .def(py::init([](const std::string& method) { return new PageMerkle(parse_method(method)); }),
           py::arg("method") = "auto",
           "method 'auto' tracks writes with userfaultfd write-protection when possible, else compares "
           "with a shadow copy; 'shadow' forces the shadow copy")
      .def(
          "commit",
          [](PageMerkle& self, const py::buffer& buf) {
            View v(buf);
            Digest d;
            {
              py::gil_scoped_release nogil;
              d = self.commit(v.ptr, v.len);
            }
            return to_bytes(d);
          },
          py::arg("buf"), "Commit to the buffer's current contents; returns the 32-byte root")
      .def_property_readonly("root",
                             [](const PageMerkle& self) -> py::object {
                               if (!self.has_root()) return py::none();
                               return to_bytes(self.root());  // a copy taken under the lock
                             })
      .def_property_readonly("page_count", &PageMerkle::page_count)
      .def_property_readonly("method", &PageMerkle::method)
      .def_property_readonly("last_rehashed", &PageMerkle::last_rehashed,
                             "pages rehashed by the last commit")
      .def("reset", &PageMerkle::reset)
      .def(
          "leaves",
          [](const PageMerkle& self) {
            std::string out;
            for (const Digest& d : self.leaves()) out.append(reinterpret_cast<const char*>(d.data()), d.size());
            return py::bytes(out);
          },
          "leaf digests (32 bytes per 64 KiB page) as of the last commit")
      .def(
          "seed",
          [](PageMerkle& self, const py::buffer& buf, const py::bytes& leaves) {
            View v(buf);
            std::string l = leaves;
            if (l.size() % 32) throw py::value_error("PageMerkle.seed: leaves must be 32-byte digests");
            std::vector<Digest> ds(l.size() / 32);
            for (size_t i = 0; i < ds.size(); ++i) std::memcpy(ds[i].data(), l.data() + 32 * i, 32);
            Digest d;
            {
              py::gil_scoped_release nogil;
              d = self.seed(v.ptr, v.len, ds);
            }
            return to_bytes(d);
          },
          py::arg("buf"), py::arg("leaves"),
          "Adopt the leaf digests of the buffer's current contents as committed (a copy-on-write restore); "
          "later commits rehash only pages written after this call. Returns the root")
      .def_static(
          "full_root",
          [](const py::buffer& buf) {
            View v(buf);
            Digest d;
            {
              py::gil_scoped_release nogil;
              d = aocu::merkle::full_root(v.ptr, v.len);
            }
            return to_bytes(d);
          },
          py::arg("buf"), "Root computed from scratch (reference for verification)");
}
