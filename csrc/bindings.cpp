// pybind11 bindings for reversalkit._C: the only file that knows about Python.
// The C++ sources beside it are plain C++17; each defines its bind_* function in a small section
// at the end of its .cpp, declared here.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_ngrams(py::module_& m);
void bind_decode_attention(py::module_& m);
void bind_decode_step(py::module_& m);
void bind_train_ops(py::module_& m);

PYBIND11_MODULE(_C, m) {
    m.doc() = "reversalkit host-side hot loops: n-gram statistics, CPU decode "
              "attention, the decode step's sampler, RoPE and RMSNorm, and training's RMSNorm and SwiGLU";
    bind_ngrams(m);
    bind_decode_attention(m);
    bind_decode_step(m);
    bind_train_ops(m);
}
