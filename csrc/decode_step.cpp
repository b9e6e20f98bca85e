// Decode-step kernels around attention: sampling, RoPE, RMSNorm (see decode_step.h).
#include "decode_step.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "simd_math.h"

namespace reversalkit {
namespace {

// ---- token sampling (see sample_rows in decode_step.h) ----

constexpr int64_t kSampleBlock = 16;  // weights per block sum: the CDF search skips whole blocks
constexpr uint64_t kRetrySalt = 0xD1B54A32D192ED03ULL;

// splitmix64 of key + counter * golden ratio -> (0, 1); reversalkit.kernels.sample_top_p.counter_uniforms.
double counter_uniform(uint64_t key, uint64_t ctr) {
    uint64_t x = key + ctr * 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    x ^= x >> 31;
    return (static_cast<double>(x >> 11) + 0.5) * 0x1p-53;
}

// w = exp(x / temp - max), bsum[i] = sum of block i of w; returns the total (sum of the bsum).
float scalar_weights(const float* x, int64_t V, float temp, float* w, float* bsum) {
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < V; ++t) m = std::max(m, w[t] = x[t] / temp);
    float total = 0.f;
    for (int64_t t0 = 0; t0 < V; t0 += kSampleBlock) {
        float s = 0.f;
        for (int64_t t = t0; t < std::min(V, t0 + kSampleBlock); ++t) s += (w[t] = std::exp(w[t] - m));
        bsum[t0 / kSampleBlock] = s;
        total += s;
    }
    return total;
}

#ifdef RK_X86
__attribute__((target("avx2,fma"))) inline __m256 exp_or_zero(__m256 d) {
    // exp_nonpositive clamps at -87; tokens further below the max keep probability 0, as in torch
    return _mm256_and_ps(exp_nonpositive(d), _mm256_cmp_ps(d, _mm256_set1_ps(-87.f), _CMP_GE_OQ));
}

__attribute__((target("avx2,fma"))) float avx2_weights(const float* x, int64_t V, float temp, float* w,
                                                       float* bsum) {
    const __m256 tv = _mm256_set1_ps(temp);
    __m256 mv = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    int64_t t = 0;
    for (; t + 8 <= V; t += 8) {
        const __m256 y = _mm256_div_ps(_mm256_loadu_ps(x + t), tv);  // division, like logits / T
        _mm256_storeu_ps(w + t, y);
        mv = _mm256_max_ps(mv, y);
    }
    float m = hmax(mv);
    for (; t < V; ++t) m = std::max(m, w[t] = x[t] / temp);
    const __m256 mb = _mm256_set1_ps(m);
    float total = 0.f;
    for (int64_t t0 = 0; t0 < V; t0 += kSampleBlock) {
        float s = 0.f;
        if (t0 + kSampleBlock <= V) {
            const __m256 e0 = exp_or_zero(_mm256_sub_ps(_mm256_loadu_ps(w + t0), mb));
            const __m256 e1 = exp_or_zero(_mm256_sub_ps(_mm256_loadu_ps(w + t0 + 8), mb));
            _mm256_storeu_ps(w + t0, e0);
            _mm256_storeu_ps(w + t0 + 8, e1);
            s = hsum(_mm256_add_ps(e0, e1));
        } else {
            for (int64_t u = t0; u < V; ++u) s += (w[u] = std::exp(w[u] - m));
        }
        bsum[t0 / kSampleBlock] = s;
        total += s;
    }
    return total;
}

// Mass of the weights strictly above p.
__attribute__((target("avx2,fma"))) float avx2_mass_above(const float* w, int64_t V, float p) {
    const __m256 pv = _mm256_set1_ps(p);
    __m256 acc = _mm256_setzero_ps();
    int64_t t = 0;
    for (; t + 8 <= V; t += 8) {
        const __m256 x = _mm256_loadu_ps(w + t);
        acc = _mm256_add_ps(acc, _mm256_and_ps(x, _mm256_cmp_ps(x, pv, _CMP_GT_OQ)));
    }
    float s = hsum(acc);
    for (; t < V; ++t) s += w[t] > p ? w[t] : 0.f;
    return s;
}
#endif

float scalar_mass_above(const float* w, int64_t V, float p) {
    float s = 0.f;
    for (int64_t t = 0; t < V; ++t) s += w[t] > p ? w[t] : 0.f;
    return s;
}

// Inverse CDF: the first token whose running sum reaches target (never a zero-weight one).
int64_t draw(const float* w, const float* bsum, int64_t V, float target) {
    const int64_t nb = (V + kSampleBlock - 1) / kSampleBlock;
    float c = 0.f;
    int64_t b = 0;
    for (; b < nb && c + bsum[b] < target; ++b) c += bsum[b];
    if (b < nb)
        for (int64_t t = b * kSampleBlock; t < V; ++t) {
            c += w[t];
            if (c >= target && w[t] > 0.f) return t;
        }
    int64_t t = V - 1;  // rounding left the target above the total: the last token with weight
    while (t > 0 && !(w[t] > 0.f)) --t;
    return t;
}

}  // namespace

int64_t sample_row(const SampleArgs& a, int64_t b, float* w, float* bsum) {
    const float* x = a.logits + b * a.row_stride;
#ifdef RK_X86
    static const bool avx2 = cpu_has_avx2_fma();
#else
    const bool avx2 = false;
#endif
#ifdef RK_X86
    const float total = avx2 ? avx2_weights(x, a.V, a.temperature, w, bsum)
                             : scalar_weights(x, a.V, a.temperature, w, bsum);
#else
    const float total = scalar_weights(x, a.V, a.temperature, w, bsum);
#endif
    const auto key = static_cast<uint64_t>(a.keys[b]);
    const auto ctr = static_cast<uint64_t>(a.counters[b]);
    const int64_t rounds = a.top_p < 1.f ? a.max_rounds : 1;
    for (int64_t r = 0; r < rounds; ++r) {
        const double u = counter_uniform(key + static_cast<uint64_t>(r) * kRetrySalt, ctr);
        const int64_t tok = draw(w, bsum, a.V, static_cast<float>(u) * total);
        if (a.top_p >= 1.f || w[tok] > (1.f - a.top_p) * total) return tok;
#ifdef RK_X86
        const float above = avx2 ? avx2_mass_above(w, a.V, w[tok]) : scalar_mass_above(w, a.V, w[tok]);
#else
        const float above = scalar_mass_above(w, a.V, w[tok]);
#endif
        if (above < a.top_p * total) return tok;
    }
    return -1;
}

void sample_rows(const SampleArgs& a, int64_t b0, int64_t b1) {
    std::vector<float> w(static_cast<size_t>(a.V)), bsum(static_cast<size_t>(a.V / kSampleBlock + 1));
    for (int64_t b = b0; b < b1; ++b) a.out[b] = sample_row(a, b, w.data(), bsum.data());
}

// Separate roundings for both products and the sum, like torch's mul, mul, add: a contracted
// (FMA) form would change the bits and, with them, greedy tokens.
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
void rope_rows(const RopeArgs& a, int64_t t0, int64_t t1) {
    const int64_t D = a.D, half = D / 2;
    for (int64_t t = t0; t < t1; ++t) {
        const float* c = a.cos + a.positions[t] * D;
        const float* s = a.sin_signed + a.positions[t] * D;
        for (int64_t h = 0; h < a.heads; ++h) {
            const float* x = a.x + t * a.x_stride + h * D;
            float* o = a.out + (t * a.heads + h) * D;
            for (int64_t d = 0; d < half; ++d) {
                const float p = x[d] * c[d], r = x[d + half] * s[d];
                o[d] = p + r;
            }
            for (int64_t d = half; d < D; ++d) {
                const float p = x[d] * c[d], r = x[d - half] * s[d];
                o[d] = p + r;
            }
        }
    }
}
#if defined(__clang__)
#pragma clang fp contract(on)
#endif

// torch's float sum of squares over a contiguous row: four 8-lane accumulators over 32-element
// chunks, cascaded (every 16 chunks a level's partial sums move up a level, which keeps rounding
// error low on long rows), then the levels in turn, the accumulators in turn, the lanes in turn,
// and a tail.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
float row_sum_squares(const float* x, int64_t N) {
    constexpr int kLevels = 4, kStep = 16;
    float acc[kLevels][4][8] = {};
    int64_t i = 0, chunk = 0;
    for (; i + 32 <= N; i += 32) {
        for (int k = 0; k < 4; ++k)
            for (int l = 0; l < 8; ++l) {
                const float q = x[i + 8 * k + l] * x[i + 8 * k + l];
                acc[0][k][l] += q;
            }
        ++chunk;
        for (int64_t lev = 1, step = kStep; lev < kLevels && chunk % step == 0; ++lev, step *= kStep)
            for (int k = 0; k < 4; ++k)
                for (int l = 0; l < 8; ++l) {
                    acc[lev][k][l] += acc[lev - 1][k][l];
                    acc[lev - 1][k][l] = 0.f;
                }
    }
    for (int lev = 1; lev < kLevels; ++lev)
        for (int k = 0; k < 4; ++k)
            for (int l = 0; l < 8; ++l) acc[0][k][l] += acc[lev][k][l];
    for (int k = 1; k < 4; ++k)
        for (int l = 0; l < 8; ++l) acc[0][0][l] += acc[0][k][l];
    float s = 0.f;
    for (int l = 0; l < 8; ++l) s += acc[0][0][l];
    for (; i < N; ++i) {
        const float q = x[i] * x[i];
        s += q;
    }
    return s;
}

#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
void rms_norm_rows(const RmsNormArgs& a, int64_t t0, int64_t t1) {
    const int64_t N = a.N;
    for (int64_t t = t0; t < t1; ++t) {
        float* x = a.x + t * N;
        if (a.residual != nullptr) {
            const float* r = a.residual + t * N;
            for (int64_t i = 0; i < N; ++i) x[i] += r[i];
        }
        const float var = row_sum_squares(x, N) / static_cast<float>(N);
        const float inv = 1.f / std::sqrt(var + a.eps);
        float* o = a.out + t * N;
        for (int64_t i = 0; i < N; ++i) {
            const float y = x[i] * inv;
            o[i] = y * a.w[i];
        }
    }
}

}  // namespace reversalkit

// ---- Python bindings (declared and called in bindings.cpp) ----
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "arrays.h"
#include "parallel.h"

namespace py = pybind11;

void bind_decode_step(py::module_& m) {
    m.def(
        "sample_rows_f32",
        [](const py::array& logits, const py::array& keys, const py::array& counters, const py::array& out,
           float temperature, float top_p, int64_t max_rounds, int64_t num_threads) {
            constexpr const char* fn = "sample_rows_f32";
            const float* xp = reversalkit::checked<float>(logits, fn, "logits", {-1, -1}, false);
            const int64_t B = logits.shape(0), V = logits.shape(1);
            if (V <= 0) reversalkit::bad_argument(fn, "logits", "must have at least one column, got shape " +
                                                                  reversalkit::shape_str(logits));
            if (!(temperature > 0.f)) reversalkit::bad_argument(fn, "temperature", "must be > 0, got " +
                                                                                   std::to_string(temperature));
            if (!(top_p > 0.f && top_p <= 1.f))
                reversalkit::bad_argument(fn, "top_p", "must lie in (0, 1], got " + std::to_string(top_p));
            if (max_rounds < 0)
                reversalkit::bad_argument(fn, "max_rounds", "must be >= 0, got " + std::to_string(max_rounds));
            const reversalkit::SampleArgs a{
                xp, B, V, B > 1 ? reversalkit::stride_of<float>(logits, 0) : V, temperature, top_p,
                reversalkit::checked<int64_t>(keys, fn, "keys", {B}),
                reversalkit::checked<int64_t>(counters, fn, "counters", {B}), max_rounds,
                reversalkit::checked<int64_t>(out, fn, "out", {B}, true, true)};
            py::gil_scoped_release release;
            const int64_t T = std::min<int64_t>(num_threads, B / 64);
            reversalkit::parallel_ranges(B, T, [&a](int64_t b0, int64_t b1) { reversalkit::sample_rows(a, b0, b1); });
        },
        py::arg("logits"), py::arg("keys"), py::arg("counters"), py::arg("out"), py::arg("temperature"),
        py::arg("top_p"), py::arg("max_rounds"), py::arg("num_threads") = 1,
        "Temperature + top-p sampling of float32 logits (B, V) (rows may be strided, columns dense):\n"
        "keys, counters int64 (B,); out int64 (B,) gets each token, or -1 for a row whose nucleus draw\n"
        "was rejected max_rounds times (the caller samples those rows another way). Row b's draws are\n"
        "reversalkit.kernels.sample_top_p's: counter_uniforms(key + r * salt, counter).");
    using reversalkit::checked;
    m.def(
        "rope_f32",
        [](const py::array& x, const py::array& positions, const py::array& cos, const py::array& sin_signed,
           const py::array& out) {
            constexpr const char* fn = "rope_f32";
            const float* cp = checked<float>(cos, fn, "cos", {-1, -1});
            const int64_t P = cos.shape(0), D = cos.shape(1);
            if (D % 2) reversalkit::bad_argument(fn, "cos", "must have an even head_dim, got shape " +
                                                               reversalkit::shape_str(cos));
            const float* sp = checked<float>(sin_signed, fn, "sin_signed", {P, D});
            float* op = checked<float>(out, fn, "out", {-1, -1, D}, true, true);
            const int64_t T = out.shape(0), heads = out.shape(1);
            const float* xp = checked<float>(x, fn, "x", {T, -1}, false);
            if (x.shape(1) < heads * D)
                reversalkit::bad_argument(fn, "x", "has shape " + reversalkit::shape_str(x) + " but rows must hold at least "
                                          "heads * D = " + std::to_string(heads * D) + " floats (out is " +
                                          reversalkit::shape_str(out) + ")");
            const int64_t* pp = checked<int64_t>(positions, fn, "positions", {T});
            for (int64_t t = 0; t < T; ++t)
                if (pp[t] < 0 || pp[t] >= P)
                    reversalkit::bad_argument(fn, "positions", "must lie in [0, " + std::to_string(P) +
                                              ") (the rows of cos), got " + std::to_string(pp[t]));
            const reversalkit::RopeArgs a{xp, reversalkit::stride_of<float>(x, 0), pp, cp, sp, heads, D, op};
            py::gil_scoped_release release;
            reversalkit::rope_rows(a, 0, T);
        },
        py::arg("x"), py::arg("positions"), py::arg("cos"), py::arg("sin_signed"), py::arg("out"),
        "Rotary embedding of the first `heads` heads of float32 rows x (T, >= heads*D; rows may be strided):\n"
        "out (T, heads, D) = x * cos[pos] + roll(x, D/2) * sin_signed[pos], rounded like torch's separate\n"
        "ops (bitwise equal to them); positions int64 (T,) in [0, P); cos, sin_signed (P, D). out is written.");
    m.def(
        "rms_norm_f32",
        [](const py::array& x, const py::object& residual, const py::array& w, float eps, const py::array& out) {
            constexpr const char* fn = "rms_norm_f32";
            float* xp = checked<float>(x, fn, "x", {-1, -1}, true, !residual.is_none());
            const int64_t T = x.shape(0), N = x.shape(1);
            if (N <= 0) reversalkit::bad_argument(fn, "x", "must have rows of at least one float, got shape " +
                                                             reversalkit::shape_str(x));
            const float* rp = residual.is_none()
                                  ? nullptr
                                  : checked<float>(py::array(residual), fn, "residual", {T, N});
            const reversalkit::RmsNormArgs a{xp, rp, checked<float>(w, fn, "w", {N}), eps, N,
                                             checked<float>(out, fn, "out", {T, N}, true, true)};
            py::gil_scoped_release release;
            reversalkit::rms_norm_rows(a, 0, T);
        },
        py::arg("x"), py::arg("residual"), py::arg("w"), py::arg("eps"), py::arg("out"),
        "RMSNorm of contiguous float32 rows x (T, N), optionally after x += residual (T, N) (in place; None:\n"
        "none): out (T, N) = x * rsqrt(mean(x^2) + eps) * w, w (N,), in torch's order of float operations\n"
        "(callers check bitwise agreement with torch for their N before relying on it).");
}
