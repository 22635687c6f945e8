// Python bindings for native/transform/*: `cu._native.transform`. bytes in, bytes out; malformed or
// unsupported input raises ValueError with the reason. The GIL is released while transforming.
#include <pybind11/pybind11.h>

#include "py_modules.h"
#include "transform/transform.h"
#include "transform/wasm_binary.h"

namespace py = pybind11;

namespace {

template <typename Fn>
auto run(const py::buffer& b, Fn fn) {
  py::buffer_info info = b.request();
  const auto* p = static_cast<const uint8_t*>(info.ptr);
  size_t n = static_cast<size_t>(info.size * info.itemsize);
  try {
    py::gil_scoped_release nogil;
    return fn(p, n);
  } catch (const aocu::wasm::Error& e) {
    throw py::value_error(e.what());
  }
}

py::bytes to_bytes(const std::vector<uint8_t>& v) {
  return py::bytes(reinterpret_cast<const char*>(v.data()), v.size());
}

}  // namespace

void aocu_register_transform(py::module_& m) {
  auto t = m.def_submodule("transform", "Load-time wasm binary transforms (legacy EH translation, metering, memory64 lowering)");
  t.def(
      "has_legacy_eh",
      [](const py::buffer& wasm) {
        return run(wasm, [](const uint8_t* p, size_t n) { return aocu::transform::has_legacy_eh(p, n); });
      },
      py::arg("wasm"), "True if a function uses try/catch/catch_all/rethrow/delegate (legacy exceptions)");
  t.def(
      "translate_legacy_eh",
      [](const py::buffer& wasm) {
        return to_bytes(
            run(wasm, [](const uint8_t* p, size_t n) { return aocu::transform::translate_legacy_eh(p, n); }));
      },
      py::arg("wasm"),
      "Translate legacy exception handling to try_table/throw_ref/exnref (see docs/ABI.md); modules without "
      "legacy opcodes are returned unchanged");
  t.def(
      "meter",
      [](const py::buffer& wasm, bool i64) {
        return to_bytes(
            run(wasm, [i64](const uint8_t* p, size_t n) { return aocu::transform::meter(p, n, i64); }));
      },
      py::arg("wasm"), py::arg("i64"),
      "The @permaweb/wasm-metering rewrite (see docs/ABI.md): imports metering.usegas((i64|i32)) and charges "
      "every code segment before it runs");
  t.def(
      "memory64_limits",
      [](const py::buffer& wasm) -> py::object {
        auto info = run(wasm, [](const uint8_t* p, size_t n) { return aocu::transform::memory64_info(p, n); });
        if (!info.memory64) return py::none();
        return py::make_tuple(info.min_pages, info.has_max ? py::object(py::int_(info.max_pages)) : py::none());
      },
      py::arg("wasm"),
      "(min pages, max pages or None) of the module's memory when it has exactly one defined 64-bit memory, "
      "else None");
  t.def(
      "lower_memory64",
      [](const py::buffer& wasm, bool branch_checks) {
        return to_bytes(run(wasm, [branch_checks](const uint8_t* p, size_t n) {
          return aocu::transform::lower_memory64(p, n, branch_checks);
        }));
      },
      py::arg("wasm"), py::kw_only(), py::arg("branch_checks") = false,
      "memory64 lowering: the module on a 32-bit memory with i64 addresses saturated at each access, "
      "memory.size/grow extended (docs/ABI.md); exact while the memory stays <= 65535 pages, which the caller "
      "ensures. ValueError when the module cannot be lowered");
}
