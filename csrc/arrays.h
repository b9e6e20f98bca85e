// Checked array arguments for the C++ entries. Python passes CPU tensors as numpy views
// (`tensor.numpy()`, zero-copy); an entry turns each into a typed pointer only after its dtype, rank,
// shape, contiguity and writability are checked, so a wrong call raises ValueError naming the
// argument and what it must be, never a segfault.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>

namespace reversalkit {

namespace py = pybind11;

template <typename T>
inline const char* dtype_name();
template <>
inline const char* dtype_name<float>() { return "float32"; }
template <>
inline const char* dtype_name<int64_t>() { return "int64"; }

[[noreturn]] inline void bad_argument(const char* fn, const char* name, const std::string& what) {
    throw py::value_error(std::string(fn) + ": argument '" + name + "' " + what);
}

inline std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

// Checks `a` and returns its data pointer. `shape` lists the expected sizes, -1 for any; the rank
// must match. `contiguous`: C-contiguous (row-major, no gaps); otherwise only the innermost dimension
// must be dense (stride one element) and the caller reads the outer strides with `stride_of`.
template <typename T>
T* checked(const py::array& a, const char* fn, const char* name, std::initializer_list<int64_t> shape,
           bool contiguous = true, bool writeable = false) {
    if (!a.dtype().is(py::dtype::of<T>()))
        bad_argument(fn, name, std::string("must be ") + dtype_name<T>() + ", got " +
                                   std::string(py::str(a.dtype())) + " (convert the tensor with .to(torch." +
                                   dtype_name<T>() + "))");
    if (a.ndim() != static_cast<py::ssize_t>(shape.size()))
        bad_argument(fn, name, "must have " + std::to_string(shape.size()) + " dimensions, got shape " +
                                   shape_str(a));
    py::ssize_t i = 0;
    for (int64_t want : shape) {
        if (want >= 0 && a.shape(i) != want)
            bad_argument(fn, name, "has shape " + shape_str(a) + " but dimension " + std::to_string(i) +
                                       " must be " + std::to_string(want));
        ++i;
    }
    if (contiguous && !(a.flags() & py::array::c_style))
        bad_argument(fn, name, "must be contiguous (call .contiguous() on the tensor)");
    if (!contiguous && a.ndim() > 0 && a.shape(a.ndim() - 1) > 1 &&
        a.strides(a.ndim() - 1) != static_cast<py::ssize_t>(sizeof(T)))
        bad_argument(fn, name, "must be dense in its last dimension (call .contiguous() on the tensor)");
    if (writeable && !a.writeable()) bad_argument(fn, name, "must be writeable (it is an output)");
    return static_cast<T*>(const_cast<void*>(a.data()));
}

// Stride of dimension `dim` of `a` in elements of T.
template <typename T>
int64_t stride_of(const py::array& a, py::ssize_t dim) {
    return static_cast<int64_t>(a.strides(dim) / static_cast<py::ssize_t>(sizeof(T)));
}

}  // namespace reversalkit
