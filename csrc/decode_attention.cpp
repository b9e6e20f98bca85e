// CPU decode attention over per-sequence KV rows (see decode_attention.h).
#include "decode_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define RK_X86 1
#endif

namespace reversalkit {
namespace {

// Scores of the g query heads of KV head j of sequence b against its tokens, then softmax in place.
// sc: (g, n). Returns nothing; lse and the normalised weights land in lse / sc.
void scalar_row(const TailAttentionArgs& a, int64_t b, int64_t j, std::vector<float>& sc) {
    const int64_t g = a.H / a.Hkv, D = a.D, lo = a.lo[b], n = a.hi[b] - a.lo[b];
    const float* kp = a.k + b * a.row_stride + j * a.head_stride + lo * D;
    const float* vp = a.v + b * a.row_stride + j * a.head_stride + lo * D;
    sc.resize(static_cast<size_t>(g * n));
    for (int64_t i = 0; i < g; ++i) {
        const float* q = a.q + (b * a.H + j * g + i) * D;
        float* s = sc.data() + i * n;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t t = 0; t < n; ++t) {
            float acc = 0.f;
            for (int64_t d = 0; d < D; ++d) acc += q[d] * kp[t * D + d];
            s[t] = acc * a.scale;
            m = std::max(m, s[t]);
        }
        float l = 0.f;
        for (int64_t t = 0; t < n; ++t) {
            s[t] = std::exp(s[t] - m);
            l += s[t];
        }
        a.lse[b * a.H + j * g + i] = m + std::log(l);
        float* o = a.out + (b * a.H + j * g + i) * D;
        std::fill(o, o + D, 0.f);
        const float inv = 1.f / l;
        for (int64_t t = 0; t < n; ++t) {
            const float p = s[t] * inv;
            for (int64_t d = 0; d < D; ++d) o[d] += p * vp[t * D + d];
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

constexpr int64_t kMaxChunks = 32;  // D <= 256
constexpr int64_t kMaxGroup = 8;

// Same as scalar_row for D % 8 == 0, D <= 256, g <= 8: each K and V token is loaded once for all
// g query heads; the query heads stay in registers or L1.
__attribute__((target("avx2,fma"))) void avx2_row(const TailAttentionArgs& a, int64_t b, int64_t j,
                                                  std::vector<float>& sc) {
    const int64_t g = a.H / a.Hkv, D = a.D, C = D / 8, lo = a.lo[b], n = a.hi[b] - a.lo[b];
    const float* kp = a.k + b * a.row_stride + j * a.head_stride + lo * D;
    const float* vp = a.v + b * a.row_stride + j * a.head_stride + lo * D;
    const float* q0 = a.q + (b * a.H + j * g) * D;
    sc.resize(static_cast<size_t>(g * n));
    const __m256 scale = _mm256_set1_ps(a.scale);
    for (int64_t t = 0; t < n; ++t) {
        const float* kt = kp + t * D;
        for (int64_t i = 0; i < g; ++i) {
            const float* q = q0 + i * D;
            __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(q), _mm256_loadu_ps(kt));
            for (int64_t c = 1; c < C; ++c)
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * c), _mm256_loadu_ps(kt + 8 * c), acc);
            sc[i * n + t] = hsum(_mm256_mul_ps(acc, scale));
        }
    }
    float inv[kMaxGroup];
    for (int64_t i = 0; i < g; ++i) {
        float* s = sc.data() + i * n;
        __m256 mv = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
        int64_t t = 0;
        for (; t + 8 <= n; t += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(s + t));
        float m = hmax(mv);
        for (; t < n; ++t) m = std::max(m, s[t]);
        const __m256 mb = _mm256_set1_ps(m);
        __m256 lv = _mm256_setzero_ps();
        for (t = 0; t + 8 <= n; t += 8) {
            const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + t), mb));
            _mm256_storeu_ps(s + t, e);
            lv = _mm256_add_ps(lv, e);
        }
        float l = hsum(lv);
        for (; t < n; ++t) {
            s[t] = std::exp(s[t] - m);
            l += s[t];
        }
        a.lse[b * a.H + j * g + i] = m + std::log(l);
        inv[i] = 1.f / l;
    }
    __m256 acc[kMaxGroup * kMaxChunks];
    for (int64_t x = 0; x < g * C; ++x) acc[x] = _mm256_setzero_ps();
    for (int64_t t = 0; t < n; ++t) {
        const float* vt = vp + t * D;
        for (int64_t c = 0; c < C; ++c) {
            const __m256 vv = _mm256_loadu_ps(vt + 8 * c);
            for (int64_t i = 0; i < g; ++i)
                acc[i * C + c] = _mm256_fmadd_ps(_mm256_set1_ps(sc[i * n + t]), vv, acc[i * C + c]);
        }
    }
    for (int64_t i = 0; i < g; ++i) {
        float* o = a.out + (b * a.H + j * g + i) * D;
        const __m256 iv = _mm256_set1_ps(inv[i]);
        for (int64_t c = 0; c < C; ++c) _mm256_storeu_ps(o + 8 * c, _mm256_mul_ps(acc[i * C + c], iv));
    }
}
#endif

}  // namespace

bool tail_attention_has_avx2() {
#ifdef RK_X86
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

void tail_attention(const TailAttentionArgs& a, int64_t b0, int64_t b1) {
    std::vector<float> sc;
    const int64_t g = a.H / a.Hkv;
#ifdef RK_X86
    static const bool avx2 = tail_attention_has_avx2();
    if (avx2 && a.D % 8 == 0 && a.D / 8 <= kMaxChunks && g <= kMaxGroup) {
        for (int64_t b = b0; b < b1; ++b)
            for (int64_t j = 0; j < a.Hkv; ++j) avx2_row(a, b, j, sc);
        return;
    }
#endif
    (void)g;
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
        "tail_attention_f32",
        [](uintptr_t q, uintptr_t k, uintptr_t v, int64_t row_stride, int64_t head_stride, uintptr_t lo,
           uintptr_t hi, int64_t B, int64_t H, int64_t Hkv, int64_t D, float scale, uintptr_t out,
           uintptr_t lse, int64_t num_threads) {
            if (B < 0 || H <= 0 || Hkv <= 0 || D <= 0 || H % Hkv)
                throw std::invalid_argument("tail_attention_f32: bad shape B=" + std::to_string(B) + " H=" +
                                            std::to_string(H) + " Hkv=" + std::to_string(Hkv) +
                                            " D=" + std::to_string(D));
            reversalkit::TailAttentionArgs a{
                reinterpret_cast<const float*>(q), reinterpret_cast<const float*>(k),
                reinterpret_cast<const float*>(v), row_stride, head_stride,
                reinterpret_cast<const int64_t*>(lo), reinterpret_cast<const int64_t*>(hi),
                B, H, Hkv, D, scale, reinterpret_cast<float*>(out), reinterpret_cast<float*>(lse)};
            py::gil_scoped_release release;
            const int64_t T = std::max<int64_t>(1, std::min<int64_t>(num_threads, B / 16));
            if (T == 1) {
                reversalkit::tail_attention(a, 0, B);
                return;
            }
            std::vector<std::thread> pool;
            for (int64_t w = 1; w < T; ++w)
                pool.emplace_back([&a, w, T, B] { reversalkit::tail_attention(a, B * w / T, B * (w + 1) / T); });
            reversalkit::tail_attention(a, 0, B / T);
            for (auto& th : pool) th.join();
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("row_stride"), py::arg("head_stride"), py::arg("lo"),
        py::arg("hi"), py::arg("B"), py::arg("H"), py::arg("Hkv"), py::arg("D"), py::arg("scale"),
        py::arg("out"), py::arg("lse"), py::arg("num_threads") = 1,
        "Decode attention of one query per sequence over tokens [lo, hi) of its KV row, on raw float32\n"
        "buffers given by address (the caller keeps them alive and checks dtypes and layouts):\n"
        "q, out (B, H, D); k, v element (b, j, t, d) at b*row_stride + j*head_stride + t*D + d;\n"
        "lo, hi int64 (B,); lse float32 (B, H) receives the log-sum-exp of the scaled scores.");
    m.def("tail_attention_has_avx2", &reversalkit::tail_attention_has_avx2);
}
