// Python bindings of the engine: cu._native.engine (used only by cu.engine).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>

#include "engine/engine.h"
#include "engine/instance.h"
#include "engine/memory_creator.h"
#include "engine/snapshot.h"
#include "py_modules.h"
#include "wasmtime_api.h"

namespace py = pybind11;
using namespace aocu::engine;

namespace {

Family to_family(int f) {
  if (f < F1 || f > W64) throw py::value_error("unknown format family " + std::to_string(f));
  return static_cast<Family>(f);
}

StateImage state_from_py(const py::tuple& t) {
  if (t.size() != 4) throw SnapshotDataError("state must be (mem_size, memory_image, globals, host_state)");
  StateImage s;
  s.mem_size = t[0].cast<uint64_t>();
  if (py::isinstance<PageImage>(t[1])) {  // copy-on-write restore from a raw page image
    s.image = t[1].cast<std::shared_ptr<PageImage>>();
    if (s.image->size() != s.mem_size) throw SnapshotDataError("page image size mismatch");
  } else {
    s.memory = t[1].cast<std::string>();
    s.encoded = true;
    if (encoded_memory_size(s.memory) != s.mem_size) throw SnapshotDataError("memory image size mismatch");
  }
  for (auto g : t[2].cast<py::list>()) {
    auto gt = g.cast<py::tuple>();
    s.globals.push_back(GlobalVal{gt[0].cast<std::string>(), gt[1].cast<uint8_t>(), gt[2].cast<int64_t>()});
  }
  s.host = t[3].cast<std::string>();
  return s;
}

}  // namespace

void aocu_register_engine(py::module_& m) {
  auto e = m.def_submodule("engine", "wasmtime-backed engine for AO process modules (use cu.engine)");
  static py::exception<ModuleLoadError> mod_err(e, "ModuleLoadError", PyExc_ValueError);
  static py::exception<SnapshotDataError> snap_err(e, "SnapshotDataError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ModuleLoadError& x) {
      py::set_error(mod_err, x.what());
    } catch (const SnapshotDataError& x) {
      py::set_error(snap_err, x.what());
    }
  });

  e.def(
      "init",
      [](const std::string& path) {
        std::string err;
        if (!aocu::wt::load_api(path, err)) throw py::import_error(err);
      },
      py::arg("libwasmtime_path"), "dlopen the wasmtime C API library and resolve the declared subset");
  e.def("initialized", [] { return aocu::wt::api != nullptr; });
  e.def("fingerprint", &Engine::fingerprint, py::arg("fuel") = true,
        "engine configuration string (compiled-module cache key part) of the fuel or fuel-free engine");
  e.def("encoded_memory_size", [](const py::bytes& b) { return encoded_memory_size(std::string(b)); });
  e.attr("F1") = static_cast<int>(F1);
  e.attr("F2") = static_cast<int>(F2);
  e.attr("F3") = static_cast<int>(F3);
  e.attr("F4") = static_cast<int>(F4);
  e.attr("W64") = static_cast<int>(W64);

  py::class_<CompiledModule, std::shared_ptr<CompiledModule>>(e, "CompiledModule")
      .def_static("compile",
                  [](const py::bytes& b, bool fuel) {
                    std::string s = b;
                    py::gil_scoped_release nogil;
                    return CompiledModule::compile(reinterpret_cast<const uint8_t*>(s.data()), s.size(), fuel);
                  },
                  py::arg("wasm"), py::arg("fuel") = true)
      .def_static("deserialize",
                  [](const py::bytes& b, bool fuel) {
                    std::string s = b;
                    py::gil_scoped_release nogil;
                    return CompiledModule::deserialize(reinterpret_cast<const uint8_t*>(s.data()), s.size(), fuel);
                  },
                  py::arg("data"), py::arg("fuel") = true)
      .def_static("describe",
                  [](const py::bytes& b) {
                    std::string s = b;
                    py::gil_scoped_release nogil;
                    return CompiledModule::describe(reinterpret_cast<const uint8_t*>(s.data()), s.size());
                  },
                  py::arg("wasm"), "validated and described without compiling (holds no code)")
      .def_property_readonly("compiled", &CompiledModule::compiled, "holds code (False: from describe)")
      .def_property_readonly("fuel", &CompiledModule::fuel, "compiled for (and runs on) the fuel engine")
      .def("serialize", [](const CompiledModule& cm) { return py::bytes(cm.serialize()); })
      .def("imports",
           [](const CompiledModule& cm) {
             py::list out;
             for (auto& i : cm.imports()) out.append(py::make_tuple(i.module, i.name, i.kind, i.sig));
             return out;
           })
      .def("exports",
           [](const CompiledModule& cm) {
             py::list out;
             for (auto& x : cm.exports()) out.append(py::make_tuple(x.first, x.second));
             return out;
           })
      .def("check", [](const CompiledModule& cm, int fam) { return cm.check(to_family(fam)); })
      .def_property_readonly("metered", &CompiledModule::imports_usegas);

  auto digest_bytes = [](const PageDigest& d) { return py::bytes(reinterpret_cast<const char*>(d.data()), d.size()); };
  py::class_<PageImage, std::shared_ptr<PageImage>>(e, "PageImage",
                                                    "raw page image mapped copy-on-write (engine/memory_creator.h)")
      .def_static("from_encoded",
                  [](const py::bytes& b) {
                    std::string s = b;
                    py::gil_scoped_release nogil;
                    return PageImage::from_encoded(s);
                  })
      .def_static(
          "from_instance",
          [](const Instance& inst, py::object leaves) {
            std::vector<PageDigest> ds;
            if (!leaves.is_none()) {
              std::string l = leaves.cast<std::string>();
              if (l.size() % 32) throw py::value_error("leaves must be 32-byte digests");
              ds.resize(l.size() / 32);
              for (size_t i = 0; i < ds.size(); ++i) std::memcpy(ds[i].data(), l.data() + 32 * i, 32);
            }
            py::gil_scoped_release nogil;
            return PageImage::from_memory(inst.memory_data(), inst.memory_size(), leaves.is_none() ? nullptr : &ds);
          },
          py::arg("instance"), py::arg("leaves") = py::none(),
          "copy of the instance's memory; `leaves`: its page digests from a page-Merkle commit just taken")
      .def_static(
          "open",
          [](const std::string& path, bool verify) {
            py::gil_scoped_release nogil;
            return PageImage::open(path, verify);
          },
          py::arg("path"), py::arg("verify") = true)
      .def(
          "write_file",
          [](const PageImage& img, const std::string& path, const py::bytes& meta) {
            std::string m = meta;
            py::gil_scoped_release nogil;
            img.write_file(path, m);
          },
          py::arg("path"), py::arg("meta"))
      .def("encode",
           [](const PageImage& img) {
             std::string out;
             {
               py::gil_scoped_release nogil;
               out = encode_memory(img.data(), img.size());
             }
             return py::bytes(out);
           })
      .def_property_readonly("size", &PageImage::size)
      .def_property_readonly("file_backed", &PageImage::file_backed)
      .def_property_readonly("meta", [](const PageImage& img) { return py::bytes(img.meta()); })
      .def_property_readonly("root", [digest_bytes](const PageImage& img) { return digest_bytes(img.root()); })
      .def_property_readonly("leaves", [](const PageImage& img) {
        std::string out;
        for (const PageDigest& d : img.leaves()) out.append(reinterpret_cast<const char*>(d.data()), d.size());
        return py::bytes(out);
      });

  py::class_<Instance>(e, "Instance")
      .def(py::init([](std::shared_ptr<CompiledModule> cm, int fam, int64_t memory_limit, int64_t compute_limit,
                       double timeout_s, py::object state) {
             Limits lim{memory_limit, compute_limit, timeout_s};
             if (state.is_none()) {
               py::gil_scoped_release nogil;
               return new Instance(cm, to_family(fam), lim, nullptr);
             }
             StateImage s = state_from_py(state.cast<py::tuple>());
             py::gil_scoped_release nogil;
             return new Instance(cm, to_family(fam), lim, &s);
           }),
           py::arg("module"), py::arg("family"), py::arg("memory_limit") = -1, py::arg("compute_limit") = -1,
           py::arg("timeout_s") = 0.0, py::arg("state") = py::none())
      .def(
          "handle",
          [](Instance& inst, const py::bytes& msg, const py::bytes& env) {
            std::string m = msg, v = env;
            CallResult r;
            {
              py::gil_scoped_release nogil;
              r = inst.handle(m, v);
            }
            py::object resp = r.has_response ? py::object(py::bytes(r.response)) : py::object(py::none());
            py::object err = r.is_error ? py::object(py::str(r.error)) : py::object(py::none());
            return py::make_tuple(resp, err, r.gas, r.fuel);
          },
          "-> (response JSON bytes | None, error | None, gas used, fuel used); memory is rolled back on error")
      .def_property_readonly("memory_size", &Instance::memory_size)
      .def_property_readonly("metered", &Instance::metered)
      .def("memory",
           [](const Instance& inst) {
             return py::bytes(reinterpret_cast<const char*>(inst.memory_data()), inst.memory_size());
           })
      .def(
          "memory_view",
          [](const Instance& inst) {
            // zero-copy, read-only; valid only until the next call into the instance
            return py::memoryview::from_memory(inst.memory_data(), static_cast<py::ssize_t>(inst.memory_size()));
          },
          py::keep_alive<0, 1>())
      .def("capture",
           [](const Instance& inst) {
             StateImage s;
             {
               py::gil_scoped_release nogil;
               s = inst.capture(true);
             }
             py::list globals;
             for (auto& g : s.globals) globals.append(py::make_tuple(g.name, g.kind, g.bits));
             return py::make_tuple(s.mem_size, py::bytes(s.memory), globals, py::bytes(s.host));
           })
      .def_property_readonly("last_handle_ns", &Instance::last_handle_ns)
      .def("stats", &Instance::rollback_stats);
}
