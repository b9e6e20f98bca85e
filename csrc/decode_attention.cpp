// CPU decode attention over the shared prefix and per-sequence KV rows (see decode_attention.h).
#include "decode_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define RK_X86 1
#endif

namespace reversalkit {
namespace {

// What one (sequence b, KV head j) attends to: nc prefix tokens from c0, n row tokens from lo.
struct Span {
    int64_t g, c0, nc, lo, n;
    const float *kp, *vp, *pv;  // row K/V at token lo, prefix V at token c0
};

Span span(const RowAttentionArgs& a, int64_t b, int64_t j) {
    Span s;
    s.g = a.H / a.Hkv;
    s.c0 = a.prefix_len ? std::min(a.prefix_lo[b], a.prefix_len) : 0;
    s.nc = a.prefix_len - s.c0;
    s.lo = a.lo[b];
    s.n = a.hi[b] - a.lo[b];
    s.kp = a.k + b * a.row_stride + j * a.head_stride + s.lo * a.D;
    s.vp = a.v + b * a.row_stride + j * a.head_stride + s.lo * a.D;
    s.pv = a.prefix_len ? a.prefix_v + (j * a.prefix_len + s.c0) * a.D : nullptr;
    return s;
}

// Scores of query head i over [prefix | row] into sc (nc + n floats): prefix ones copied.
const float* prefix_row(const RowAttentionArgs& a, const Span& s, int64_t b, int64_t j, int64_t i) {
    return a.prefix_scores + ((j * a.B + b) * s.g + i) * a.prefix_len + s.c0;
}

void scalar_row(const RowAttentionArgs& a, int64_t b, int64_t j, std::vector<float>& sc) {
    const Span s = span(a, b, j);
    const int64_t D = a.D, tot = s.nc + s.n;
    sc.resize(static_cast<size_t>(tot));
    for (int64_t i = 0; i < s.g; ++i) {
        const float* q = a.q + (b * a.H + j * s.g + i) * D;
        if (s.nc) std::copy_n(prefix_row(a, s, b, j, i), s.nc, sc.data());
        for (int64_t t = 0; t < s.n; ++t) {
            float acc = 0.f;
            for (int64_t d = 0; d < D; ++d) acc += q[d] * s.kp[t * D + d];
            sc[s.nc + t] = acc * a.scale;
        }
        const float m = *std::max_element(sc.begin(), sc.begin() + tot);
        float l = 0.f;
        for (int64_t t = 0; t < tot; ++t) {
            sc[t] = std::exp(sc[t] - m);
            l += sc[t];
        }
        float* o = a.out + (b * a.H + j * s.g + i) * D;
        std::fill(o, o + D, 0.f);
        for (int64_t t = 0; t < tot; ++t) {
            const float p = sc[t] / l;
            const float* vt = t < s.nc ? s.pv + t * D : s.vp + (t - s.nc) * D;
            for (int64_t d = 0; d < D; ++d) o[d] += p * vt[d];
        }
    }
}

#ifdef RK_X86
__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

__attribute__((target("avx2,fma"))) inline float hmax(__m256 v) {
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

// exp(x) for x <= 0: n = round(x / ln 2), r = x - n ln 2 (Cody-Waite, two parts), e^r by its
// degree-7 Taylor polynomial (|r| <= 0.35: truncation error < 1e-8), times 2^n.
__attribute__((target("avx2,fma"))) inline __m256 exp_nonpositive(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.f));  // below, e^x underflows float anyway
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.f / 5040.f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 720.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// In place: sc[0:tot] -> exp(sc - max); returns the sum.
__attribute__((target("avx2,fma"))) float softmax_numerators(float* sc, int64_t tot) {
    __m256 mv = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    int64_t t = 0;
    for (; t + 8 <= tot; t += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(sc + t));
    float m = hmax(mv);
    for (; t < tot; ++t) m = std::max(m, sc[t]);
    const __m256 mb = _mm256_set1_ps(m);
    __m256 lv = _mm256_setzero_ps();
    for (t = 0; t + 8 <= tot; t += 8) {
        const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(sc + t), mb));
        _mm256_storeu_ps(sc + t, e);
        lv = _mm256_add_ps(lv, e);
    }
    float l = hsum(lv);
    for (; t < tot; ++t) {
        sc[t] = std::exp(sc[t] - m);
        l += sc[t];
    }
    return l;
}

constexpr int64_t kMaxChunks = 32;  // D <= 256
constexpr int64_t kMaxGroup = 8;

// acc[i * C + c] += sc[i * stride + t] * v[t, 8c:8c+8] for t < n: one V load for all g heads.
__attribute__((target("avx2,fma"))) void accumulate(__m256* acc, const float* sc, int64_t stride,
                                                    const float* v, int64_t n, int64_t g, int64_t C) {
    for (int64_t t = 0; t < n; ++t) {
        const float* vt = v + t * C * 8;
        for (int64_t c = 0; c < C; ++c) {
            const __m256 vv = _mm256_loadu_ps(vt + 8 * c);
            for (int64_t i = 0; i < g; ++i)
                acc[i * C + c] = _mm256_fmadd_ps(_mm256_set1_ps(sc[i * stride + t]), vv, acc[i * C + c]);
        }
    }
}

// scalar_row for D % 8 == 0, D <= 256, g <= 8.
__attribute__((target("avx2,fma"))) void avx2_row(const RowAttentionArgs& a, int64_t b, int64_t j,
                                                  std::vector<float>& sc) {
    const Span s = span(a, b, j);
    const int64_t g = s.g, D = a.D, C = D / 8, tot = s.nc + s.n;
    const float* q0 = a.q + (b * a.H + j * g) * D;
    sc.resize(static_cast<size_t>(g * tot));
    for (int64_t i = 0; i < g; ++i)
        if (s.nc) std::copy_n(prefix_row(a, s, b, j, i), s.nc, sc.data() + i * tot);
    const __m256 scale = _mm256_set1_ps(a.scale);
    for (int64_t t = 0; t < s.n; ++t) {
        const float* kt = s.kp + t * D;
        for (int64_t i = 0; i < g; ++i) {
            const float* q = q0 + i * D;
            __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(q), _mm256_loadu_ps(kt));
            for (int64_t c = 1; c < C; ++c)
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * c), _mm256_loadu_ps(kt + 8 * c), acc);
            sc[i * tot + s.nc + t] = hsum(_mm256_mul_ps(acc, scale));
        }
    }
    float inv[kMaxGroup];
    for (int64_t i = 0; i < g; ++i) inv[i] = 1.f / softmax_numerators(sc.data() + i * tot, tot);
    __m256 acc[kMaxGroup * kMaxChunks];
    for (int64_t x = 0; x < g * C; ++x) acc[x] = _mm256_setzero_ps();
    if (s.nc) accumulate(acc, sc.data(), tot, s.pv, s.nc, g, C);
    accumulate(acc, sc.data() + s.nc, tot, s.vp, s.n, g, C);
    for (int64_t i = 0; i < g; ++i) {
        float* o = a.out + (b * a.H + j * g + i) * D;
        const __m256 iv = _mm256_set1_ps(inv[i]);
        for (int64_t c = 0; c < C; ++c) _mm256_storeu_ps(o + 8 * c, _mm256_mul_ps(acc[i * C + c], iv));
    }
}
#endif

}  // namespace

bool row_attention_has_avx2() {
#ifdef RK_X86
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

void row_attention(const RowAttentionArgs& a, int64_t b0, int64_t b1) {
    std::vector<float> sc;
#ifdef RK_X86
    static const bool avx2 = row_attention_has_avx2();
    if (avx2 && a.D % 8 == 0 && a.D / 8 <= kMaxChunks && a.H / a.Hkv <= kMaxGroup) {
        for (int64_t b = b0; b < b1; ++b)
            for (int64_t j = 0; j < a.Hkv; ++j) avx2_row(a, b, j, sc);
        return;
    }
#endif
    for (int64_t b = b0; b < b1; ++b)
        for (int64_t j = 0; j < a.Hkv; ++j) scalar_row(a, b, j, sc);
}

}  // namespace reversalkit

// ---- Python bindings (declared and called in bindings.cpp) ----
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>
#include <thread>

namespace py = pybind11;

void bind_decode_attention(py::module_& m) {
    m.def(
        "row_attention_f32",
        [](uintptr_t q, uintptr_t k, uintptr_t v, int64_t row_stride, int64_t head_stride, uintptr_t lo,
           uintptr_t hi, uintptr_t prefix_scores, uintptr_t prefix_v, int64_t prefix_len, uintptr_t prefix_lo,
           int64_t B, int64_t H, int64_t Hkv, int64_t D, float scale, uintptr_t out, int64_t num_threads) {
            if (B < 0 || H <= 0 || Hkv <= 0 || D <= 0 || H % Hkv || prefix_len < 0)
                throw std::invalid_argument("row_attention_f32: bad shape B=" + std::to_string(B) + " H=" +
                                            std::to_string(H) + " Hkv=" + std::to_string(Hkv) + " D=" +
                                            std::to_string(D) + " prefix_len=" + std::to_string(prefix_len));
            const reversalkit::RowAttentionArgs a{
                reinterpret_cast<const float*>(q), reinterpret_cast<const float*>(k),
                reinterpret_cast<const float*>(v), row_stride, head_stride,
                reinterpret_cast<const int64_t*>(lo), reinterpret_cast<const int64_t*>(hi),
                reinterpret_cast<const float*>(prefix_scores), reinterpret_cast<const float*>(prefix_v),
                prefix_len, reinterpret_cast<const int64_t*>(prefix_lo), B, H, Hkv, D, scale,
                reinterpret_cast<float*>(out)};
            py::gil_scoped_release release;
            const int64_t T = std::max<int64_t>(1, std::min<int64_t>(num_threads, B / 16));
            std::vector<std::thread> pool;
            for (int64_t w = 1; w < T; ++w)
                pool.emplace_back([&a, w, T, B] { reversalkit::row_attention(a, B * w / T, B * (w + 1) / T); });
            reversalkit::row_attention(a, 0, B / T);
            for (auto& th : pool) th.join();
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("row_stride"), py::arg("head_stride"), py::arg("lo"),
        py::arg("hi"), py::arg("prefix_scores"), py::arg("prefix_v"), py::arg("prefix_len"),
        py::arg("prefix_lo"), py::arg("B"), py::arg("H"), py::arg("Hkv"), py::arg("D"), py::arg("scale"),
        py::arg("out"), py::arg("num_threads") = 1,
        "Decode attention of one query per sequence over the shared prefix and tokens [lo, hi) of its\n"
        "KV row, on raw float32 buffers given by address (the caller keeps them alive and checks dtypes\n"
        "and layouts): q, out (B, H, D); k, v element (b, j, t, d) at b*row_stride + j*head_stride +\n"
        "t*D + d; lo, hi, prefix_lo int64 (B,); prefix_scores (Hkv, B, H/Hkv, prefix_len), already\n"
        "scaled; prefix_v (Hkv, prefix_len, D). Addresses of the prefix buffers are ignored when\n"
        "prefix_len is 0.");
    m.def("row_attention_has_avx2", &reversalkit::row_attention_has_avx2);
}
