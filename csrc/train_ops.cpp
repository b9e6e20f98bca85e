// Training-time RMSNorm and SwiGLU, forward and backward (see train_ops.h).
#include "train_ops.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "parallel.h"
#include "simd_math.h"

namespace reversalkit {

namespace {

// sum_j x_j^2 over a row, in double.
double sum_squares_scalar(const float* x, int64_t H) {
    double ss = 0.0;
    for (int64_t j = 0; j < H; ++j) ss += static_cast<double>(x[j]) * x[j];
    return ss;
}

void rms_norm_row_scalar(const float* x, const float* w, float* y, int64_t H, double inv) {
    for (int64_t j = 0; j < H; ++j) y[j] = static_cast<float>(w[j] * (x[j] * inv));
}

// One backward row: returns s = sum_j w_j dy_j x_j and adds dy_j x_j inv into dw.
double rms_grad_sums_scalar(const float* dy, const float* x, const float* w, double inv, double* dw, int64_t H) {
    double s = 0.0;
    for (int64_t j = 0; j < H; ++j) {
        const double dyx = static_cast<double>(dy[j]) * x[j];
        s += w[j] * dyx;
        dw[j] += dyx * inv;
    }
    return s;
}

void rms_grad_row_scalar(const float* dy, const float* x, const float* w, float* dx, double inv, double c,
                         int64_t H) {
    for (int64_t j = 0; j < H; ++j) dx[j] = static_cast<float>(inv * w[j] * dy[j] - c * x[j]);
}

#ifdef RK_X86
__attribute__((target("avx2,fma"))) inline double hsum_pd(__m256d v) {
    __m128d x = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(x, _mm_unpackhi_pd(x, x)));
}

__attribute__((target("avx2,fma"))) double sum_squares_avx2(const float* x, int64_t H) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    int64_t j = 0;
    for (; j + 8 <= H; j += 8) {
        const __m256 v = _mm256_loadu_ps(x + j);
        const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        a0 = _mm256_fmadd_pd(lo, lo, a0);
        a1 = _mm256_fmadd_pd(hi, hi, a1);
    }
    return hsum_pd(_mm256_add_pd(a0, a1)) + sum_squares_scalar(x + j, H - j);
}

// y = w * (x * inv): the product x * inv in double, rounded once after the weight, as the scalar path.
__attribute__((target("avx2,fma"))) void rms_norm_row_avx2(const float* x, const float* w, float* y, int64_t H,
                                                           double inv) {
    const __m256d iv = _mm256_set1_pd(inv);
    int64_t j = 0;
    for (; j + 4 <= H; j += 4) {
        const __m256d xv = _mm256_cvtps_pd(_mm_loadu_ps(x + j)), wv = _mm256_cvtps_pd(_mm_loadu_ps(w + j));
        _mm_storeu_ps(y + j, _mm256_cvtpd_ps(_mm256_mul_pd(wv, _mm256_mul_pd(xv, iv))));
    }
    rms_norm_row_scalar(x + j, w + j, y + j, H - j, inv);
}

__attribute__((target("avx2,fma"))) double rms_grad_sums_avx2(const float* dy, const float* x, const float* w,
                                                              double inv, double* dw, int64_t H) {
    const __m256d iv = _mm256_set1_pd(inv);
    __m256d acc = _mm256_setzero_pd();
    int64_t j = 0;
    for (; j + 4 <= H; j += 4) {
        const __m256d dyx = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(dy + j)), _mm256_cvtps_pd(_mm_loadu_ps(x + j)));
        acc = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(w + j)), dyx, acc);
        _mm256_storeu_pd(dw + j, _mm256_fmadd_pd(dyx, iv, _mm256_loadu_pd(dw + j)));
    }
    return hsum_pd(acc) + rms_grad_sums_scalar(dy + j, x + j, w + j, inv, dw + j, H - j);
}

__attribute__((target("avx2,fma"))) void rms_grad_row_avx2(const float* dy, const float* x, const float* w,
                                                           float* dx, double inv, double c, int64_t H) {
    const __m256d iv = _mm256_set1_pd(inv), cv = _mm256_set1_pd(c);
    int64_t j = 0;
    for (; j + 4 <= H; j += 4) {
        const __m256d wdy = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(w + j)), _mm256_cvtps_pd(_mm_loadu_ps(dy + j)));
        const __m256d r = _mm256_fnmadd_pd(cv, _mm256_cvtps_pd(_mm_loadu_ps(x + j)), _mm256_mul_pd(iv, wdy));
        _mm_storeu_ps(dx + j, _mm256_cvtpd_ps(r));
    }
    rms_grad_row_scalar(dy + j, x + j, w + j, dx + j, inv, c, H - j);
}
#endif

// The per-row loops of one CPU: AVX2/FMA where the CPU has it, the scalar ones otherwise.
struct RmsRowOps {
    double (*sum_squares)(const float*, int64_t);
    void (*norm_row)(const float*, const float*, float*, int64_t, double);
    double (*grad_sums)(const float*, const float*, const float*, double, double*, int64_t);
    void (*grad_row)(const float*, const float*, const float*, float*, double, double, int64_t);
};

RmsRowOps rms_row_ops() {
#ifdef RK_X86
    if (cpu_has_avx2_fma()) return {sum_squares_avx2, rms_norm_row_avx2, rms_grad_sums_avx2, rms_grad_row_avx2};
#endif
    return {sum_squares_scalar, rms_norm_row_scalar, rms_grad_sums_scalar, rms_grad_row_scalar};
}

}  // namespace

void rms_norm_train_forward(const RmsNormTrainArgs& a, int64_t r0, int64_t r1) {
    const RmsRowOps ops = rms_row_ops();
    const int64_t H = a.H;
    for (int64_t r = r0; r < r1; ++r) {
        const float* x = a.x + r * H;
        const double ss = ops.sum_squares(x, H);
        a.rstd[r] = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(H) + a.eps));
        ops.norm_row(x, a.w, a.y + r * H, H, a.rstd[r]);  // the stored float, as the backward sees it
    }
}

// y_j = w_j x_j r with r = (sum_k x_k^2 / H + eps)^(-1/2), so
// dx_i = r w_i dy_i - x_i r^3 / H * sum_j w_j dy_j x_j  and  dw_j = sum_rows dy_j x_j r.
void rms_norm_train_backward(const RmsNormGradArgs& a, int64_t r0, int64_t r1, double* dw) {
    const RmsRowOps ops = rms_row_ops();
    const int64_t H = a.H;
    for (int64_t r = r0; r < r1; ++r) {
        const float* dy = a.dy + r * H;
        const float* x = a.x + r * H;
        const double inv = a.rstd[r];
        const double s = ops.grad_sums(dy, x, a.w, inv, dw, H);
        ops.grad_row(dy, x, a.w, a.dx + r * H, inv, inv * inv * inv * s / static_cast<double>(H), H);
    }
}

namespace {

inline float sigmoid_scalar(float g) {
    const float e = std::exp(-std::fabs(g));  // in (0, 1]: no overflow for any g
    return (g >= 0.f ? 1.f : e) / (1.f + e);
}

void swiglu_forward_scalar(const float* g, const float* u, float* y, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] = g[i] * sigmoid_scalar(g[i]) * u[i];
}

// silu'(g) = s * (1 + g * (1 - s)) with s = sigmoid(g)
void swiglu_backward_scalar(const float* dy, const float* g, const float* u, float* dg, float* du, int64_t i0,
                            int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
        const float s = sigmoid_scalar(g[i]);
        du[i] = dy[i] * (g[i] * s);
        dg[i] = dy[i] * u[i] * (s * (1.f + g[i] * (1.f - s)));
    }
}

#ifdef RK_X86
__attribute__((target("avx2,fma"))) inline __m256 sigmoid8(__m256 g) {
    const __m256 neg_abs = _mm256_or_ps(g, _mm256_set1_ps(-0.f));  // -|g|
    const __m256 e = exp_nonpositive(neg_abs);
    const __m256 num = _mm256_blendv_ps(_mm256_set1_ps(1.f), e, g);  // sign bit of g set: e
    return _mm256_div_ps(num, _mm256_add_ps(_mm256_set1_ps(1.f), e));
}

__attribute__((target("avx2,fma"))) void swiglu_forward_avx2(const float* g, const float* u, float* y, int64_t i0,
                                                             int64_t i1) {
    int64_t i = i0;
    for (; i + 8 <= i1; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 silu = _mm256_mul_ps(gv, sigmoid8(gv));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
    }
    swiglu_forward_scalar(g, u, y, i, i1);
}

__attribute__((target("avx2,fma"))) void swiglu_backward_avx2(const float* dy, const float* g, const float* u,
                                                              float* dg, float* du, int64_t i0, int64_t i1) {
    const __m256 one = _mm256_set1_ps(1.f);
    int64_t i = i0;
    for (; i + 8 <= i1; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 dyv = _mm256_loadu_ps(dy + i);
        const __m256 s = sigmoid8(gv);
        _mm256_storeu_ps(du + i, _mm256_mul_ps(dyv, _mm256_mul_ps(gv, s)));
        const __m256 d = _mm256_mul_ps(s, _mm256_fmadd_ps(gv, _mm256_sub_ps(one, s), one));
        _mm256_storeu_ps(dg + i, _mm256_mul_ps(_mm256_mul_ps(dyv, _mm256_loadu_ps(u + i)), d));
    }
    swiglu_backward_scalar(dy, g, u, dg, du, i, i1);
}
#endif

}  // namespace

void swiglu_forward(const float* g, const float* u, float* y, int64_t i0, int64_t i1) {
#ifdef RK_X86
    if (cpu_has_avx2_fma()) return swiglu_forward_avx2(g, u, y, i0, i1);
#endif
    swiglu_forward_scalar(g, u, y, i0, i1);
}

void swiglu_backward(const float* dy, const float* g, const float* u, float* dg, float* du, int64_t i0,
                     int64_t i1) {
#ifdef RK_X86
    if (cpu_has_avx2_fma()) return swiglu_backward_avx2(dy, g, u, dg, du, i0, i1);
#endif
    swiglu_backward_scalar(dy, g, u, dg, du, i0, i1);
}

}  // namespace reversalkit

// ---- Python bindings (declared in bindings.cpp) ----
#include <pybind11/pybind11.h>

#include "arrays.h"

namespace py = pybind11;

namespace {

// Threads for n units of work: at most num_threads, and none with less than min_units each.
int64_t threads_for(int64_t n, int64_t num_threads, int64_t min_units) {
    return std::max<int64_t>(1, std::min<int64_t>(num_threads, n / std::max<int64_t>(min_units, 1)));
}

void check_rows(const char* name, int64_t rows, int64_t H) {
    if (rows < 0 || H <= 0)
        throw std::invalid_argument(std::string(name) + ": bad shape rows=" + std::to_string(rows) +
                                    " H=" + std::to_string(H));
}

}  // namespace

void bind_train_ops(py::module_& m) {
    using reversalkit::checked;
    m.def(
        "rms_norm_train_forward_f32",
        [](const py::array& x, const py::array& w, const py::array& y, const py::array& rstd, double eps,
           int64_t num_threads) {
            constexpr const char* fn = "rms_norm_train_forward_f32";
            const float* xp = checked<float>(x, fn, "x", {-1, -1});
            const int64_t rows = x.shape(0), H = x.shape(1);
            check_rows(fn, rows, H);
            const reversalkit::RmsNormTrainArgs a{xp, checked<float>(w, fn, "w", {H}),
                                                  checked<float>(y, fn, "y", {rows, H}, true, true),
                                                  checked<float>(rstd, fn, "rstd", {rows}, true, true), H, eps};
            py::gil_scoped_release release;
            reversalkit::parallel_ranges(rows, threads_for(rows * H, num_threads, 1 << 15),
                                         [&a](int64_t r0, int64_t r1) { reversalkit::rms_norm_train_forward(a, r0, r1); });
        },
        py::arg("x"), py::arg("w"), py::arg("y"), py::arg("rstd"), py::arg("eps"), py::arg("num_threads") = 1,
        "RMSNorm of contiguous float32 rows x (rows, H): y (rows, H) = w * x * rstd, and rstd (rows,) =\n"
        "1 / sqrt(mean(x^2) + eps) for the backward; w (H,). y and rstd are written.");
    m.def(
        "rms_norm_train_backward_f32",
        [](const py::array& dy, const py::array& x, const py::array& w, const py::array& rstd, const py::array& dx,
           const py::array& dw, int64_t num_threads) {
            constexpr const char* fn = "rms_norm_train_backward_f32";
            const float* xp = checked<float>(x, fn, "x", {-1, -1});
            const int64_t rows = x.shape(0), H = x.shape(1);
            check_rows(fn, rows, H);
            const reversalkit::RmsNormGradArgs a{checked<float>(dy, fn, "dy", {rows, H}), xp,
                                                 checked<float>(w, fn, "w", {H}), checked<float>(rstd, fn, "rstd", {rows}),
                                                 checked<float>(dx, fn, "dx", {rows, H}, true, true), H};
            float* out = checked<float>(dw, fn, "dw", {H}, true, true);
            py::gil_scoped_release release;
            const int64_t T = threads_for(rows * H, num_threads, 1 << 15);
            std::vector<double> partial(static_cast<size_t>(T * H), 0.0);  // one d weight per range
            reversalkit::parallel_ranges_indexed(rows, T, [&](int64_t k, int64_t r0, int64_t r1) {
                reversalkit::rms_norm_train_backward(a, r0, r1, partial.data() + k * H);
            });
            for (int64_t j = 0; j < H; ++j) {
                double s = 0.0;
                for (int64_t t = 0; t < T; ++t) s += partial[static_cast<size_t>(t * H + j)];
                out[j] = static_cast<float>(s);
            }
        },
        py::arg("dy"), py::arg("x"), py::arg("w"), py::arg("rstd"), py::arg("dx"), py::arg("dw"),
        py::arg("num_threads") = 1,
        "Backward of rms_norm_train_forward_f32: dx (rows, H) and dw (H,), float32, written; dy, x (rows, H),\n"
        "w (H,), rstd (rows,) from the forward.");
    m.def(
        "swiglu_forward_f32",
        [](const py::array& g, const py::array& u, const py::array& y, int64_t num_threads) {
            constexpr const char* fn = "swiglu_forward_f32";
            const float* gp = checked<float>(g, fn, "g", {-1});
            const int64_t n = g.shape(0);
            const float* up = checked<float>(u, fn, "u", {n});
            float* yp = checked<float>(y, fn, "y", {n}, true, true);
            py::gil_scoped_release release;
            reversalkit::parallel_ranges(n, threads_for(n, num_threads, 1 << 15), [&](int64_t i0, int64_t i1) {
                reversalkit::swiglu_forward(gp, up, yp, i0, i1);
            });
        },
        py::arg("g"), py::arg("u"), py::arg("y"), py::arg("num_threads") = 1,
        "y = silu(g) * u over contiguous float32 vectors g, u, y of one length n (y is written).");
    m.def(
        "swiglu_backward_f32",
        [](const py::array& dy, const py::array& g, const py::array& u, const py::array& dg, const py::array& du,
           int64_t num_threads) {
            constexpr const char* fn = "swiglu_backward_f32";
            const float* gp = checked<float>(g, fn, "g", {-1});
            const int64_t n = g.shape(0);
            const float* dyp = checked<float>(dy, fn, "dy", {n});
            const float* up = checked<float>(u, fn, "u", {n});
            float* dgp = checked<float>(dg, fn, "dg", {n}, true, true);
            float* dup = checked<float>(du, fn, "du", {n}, true, true);
            py::gil_scoped_release release;
            reversalkit::parallel_ranges(n, threads_for(n, num_threads, 1 << 15), [&](int64_t i0, int64_t i1) {
                reversalkit::swiglu_backward(dyp, gp, up, dgp, dup, i0, i1);
            });
        },
        py::arg("dy"), py::arg("g"), py::arg("u"), py::arg("dg"), py::arg("du"), py::arg("num_threads") = 1,
        "Backward of swiglu_forward_f32 over vectors of length n: dg = dy * u * silu'(g), du = dy * silu(g)\n"
        "(dg and du are written).");
}
