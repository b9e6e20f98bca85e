// pybind11 bindings for reversalkit._C: the only file that knows about Python.
// The C++ sources beside it (ngrams.*, block_manager.*) are plain C++17.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;

// Each component registers its bindings in its own function below, keeping this file a thin index.
void bind_ngrams(py::module_& m);
void bind_block_manager(py::module_& m);

PYBIND11_MODULE(_C, m) {
    m.doc() = "reversalkit host-side hot loops (n-gram statistics, KV block allocator)";
    bind_ngrams(m);
    bind_block_manager(m);
}
