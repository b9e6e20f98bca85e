// CPU decode attention over the shared prefix and per-sequence KV rows (see decode_attention.h).
#include "decode_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "simd_math.h"

namespace reversalkit {
namespace {

// What one (sequence b, KV head j) attends to: nc prefix tokens from c0, ng group tokens, n row
// tokens from lo; scores are laid out in that order.
struct Span {
    int64_t g, c0, nc, ng, lo, n;
    const float *kp, *vp, *pv;  // row K/V at token lo, prefix V at token c0
    const float *gk, *gv;       // group K/V at its first attended token (ng > 0)
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
    s.ng = 0;
    s.gk = s.gv = nullptr;
    if (a.group_k != nullptr && a.group[b] >= 0 && a.group_hi[b] > a.group_lo[b]) {
        s.ng = a.group_hi[b] - a.group_lo[b];
        const int64_t off = a.group[b] * a.group_stride + j * a.group_head_stride + a.group_lo[b] * a.D;
        s.gk = a.group_k + off;
        s.gv = a.group_v + off;
    }
    return s;
}

// Scores of query head i over [prefix | row] into sc (nc + n floats): prefix ones copied.
const float* prefix_row(const RowAttentionArgs& a, const Span& s, int64_t b, int64_t j, int64_t i) {
    return a.prefix_scores + ((j * a.B + b) * s.g + i) * a.prefix_len + s.c0;
}

void scalar_row(const RowAttentionArgs& a, int64_t b, int64_t j, std::vector<float>& sc) {
    const Span s = span(a, b, j);
    const int64_t D = a.D, own = s.nc + s.ng, tot = own + s.n;
    sc.resize(static_cast<size_t>(tot));
    for (int64_t i = 0; i < s.g; ++i) {
        const float* q = a.q + (b * a.H + j * s.g + i) * D;
        if (s.nc) std::copy_n(prefix_row(a, s, b, j, i), s.nc, sc.data());
        for (int64_t t = 0; t < s.ng + s.n; ++t) {
            const float* kt = t < s.ng ? s.gk + t * D : s.kp + (t - s.ng) * D;
            float acc = 0.f;
            for (int64_t d = 0; d < D; ++d) acc += q[d] * kt[d];
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
            const float* vt = t < s.nc ? s.pv + t * D : t < own ? s.gv + (t - s.nc) * D : s.vp + (t - own) * D;
            for (int64_t d = 0; d < D; ++d) o[d] += p * vt[d];
        }
    }
}

#ifdef RK_X86
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

// Sum of each of eight vectors, as one vector: lane u holds the sum of v[u].
__attribute__((target("avx2,fma"), always_inline)) inline __m256 hsum8(const __m256* v) {
    const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

// Scaled scores of g query heads (q0: (g, D)) against n row tokens (kp: (n, D)) into
// sc[i * stride + t]. Eight tokens at a time: eight independent FMA chains per head, reduced
// together, instead of one horizontal sum (a latency chain) per score.
__attribute__((target("avx2,fma"))) void row_scores(const float* q0, const float* kp, int64_t n, int64_t g,
                                                    int64_t C, float scale, float* sc, int64_t stride) {
    const int64_t D = C * 8;
    const __m256 sv = _mm256_set1_ps(scale);
    int64_t t = 0;
    for (; t + 8 <= n; t += 8) {
        const float* kt = kp + t * D;
        for (int64_t i = 0; i < g; ++i) {
            const float* q = q0 + i * D;
            __m256 acc[8];
#pragma GCC unroll 8
            for (int u = 0; u < 8; ++u) acc[u] = _mm256_setzero_ps();
            for (int64_t c = 0; c < C; ++c) {
                const __m256 qv = _mm256_loadu_ps(q + 8 * c);
#pragma GCC unroll 8
                for (int u = 0; u < 8; ++u) acc[u] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kt + u * D + 8 * c), acc[u]);
            }
            _mm256_storeu_ps(sc + i * stride + t, _mm256_mul_ps(hsum8(acc), sv));
        }
    }
    for (; t < n; ++t) {
        const float* kt = kp + t * D;
        for (int64_t i = 0; i < g; ++i) {
            const float* q = q0 + i * D;
            __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(q), _mm256_loadu_ps(kt));
            for (int64_t c = 1; c < C; ++c)
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * c), _mm256_loadu_ps(kt + 8 * c), acc);
            sc[i * stride + t] = hsum(acc) * scale;
        }
    }
}

// acc[i][cc] += p[i * stride + t] * v[t, 8 (c0 + cc) : +8] for t < n: G x CC accumulators that stay
// in registers (G * CC <= 12), one V load shared by the G heads of the group.
template <int G, int CC>
__attribute__((target("avx2,fma"), always_inline)) inline void pv_span(__m256 (&acc)[G][CC], const float* p,
                                                                       int64_t stride, const float* v,
                                                                       int64_t n, int64_t D, int64_t c0) {
    for (int64_t t = 0; t < n; ++t) {
        __m256 w[G];
#pragma GCC unroll 8
        for (int i = 0; i < G; ++i) w[i] = _mm256_set1_ps(p[i * stride + t]);
        const float* vt = v + t * D + 8 * c0;
#pragma GCC unroll 8
        for (int cc = 0; cc < CC; ++cc) {
            const __m256 vv = _mm256_loadu_ps(vt + 8 * cc);
#pragma GCC unroll 8
            for (int i = 0; i < G; ++i) acc[i][cc] = _mm256_fmadd_ps(w[i], vv, acc[i][cc]);
        }
    }
}

// Weighted values of one (sequence, KV head) over [prefix | row] into out (G, D), scaled by inv.
template <int G, int CC>
__attribute__((target("avx2,fma"))) void pv_row(const Span& s, const float* sc, int64_t tot, int64_t D,
                                                const float* inv, float* out) {
    for (int64_t c0 = 0; c0 < D / 8; c0 += CC) {
        __m256 acc[G][CC];
#pragma GCC unroll 8
        for (int i = 0; i < G; ++i)
#pragma GCC unroll 8
            for (int cc = 0; cc < CC; ++cc) acc[i][cc] = _mm256_setzero_ps();
        if (s.nc) pv_span<G, CC>(acc, sc, tot, s.pv, s.nc, D, c0);
        if (s.ng) pv_span<G, CC>(acc, sc + s.nc, tot, s.gv, s.ng, D, c0);
        pv_span<G, CC>(acc, sc + s.nc + s.ng, tot, s.vp, s.n, D, c0);
#pragma GCC unroll 8
        for (int i = 0; i < G; ++i) {
            const __m256 iv = _mm256_set1_ps(inv[i]);
#pragma GCC unroll 8
            for (int cc = 0; cc < CC; ++cc)
                _mm256_storeu_ps(out + i * D + 8 * (c0 + cc), _mm256_mul_ps(acc[i][cc], iv));
        }
    }
}

using PvFn = void (*)(const Span&, const float*, int64_t, int64_t, const float*, float*);

template <int G>
PvFn pv_for_chunks(int64_t C) {
    // the widest chunk of 8-float columns that keeps G * CC <= 12 accumulators and divides C
    if constexpr (G == 1) {
        if (C % 8 == 0) return &pv_row<G, 8>;
    }
    if constexpr (G <= 3) {
        if (C % 4 == 0) return &pv_row<G, 4>;
    }
    if constexpr (G <= 6) {
        if (C % 2 == 0) return &pv_row<G, 2>;
    }
    return &pv_row<G, 1>;
}

PvFn pv_kernel(int64_t g, int64_t C) {
    switch (g) {
        case 1: return pv_for_chunks<1>(C);
        case 2: return pv_for_chunks<2>(C);
        case 3: return pv_for_chunks<3>(C);
        case 4: return pv_for_chunks<4>(C);
        case 5: return pv_for_chunks<5>(C);
        case 6: return pv_for_chunks<6>(C);
        case 7: return pv_for_chunks<7>(C);
        default: return pv_for_chunks<8>(C);
    }
}

// scalar_row for D % 8 == 0, D <= 256, g <= 8.
__attribute__((target("avx2,fma"))) void avx2_row(const RowAttentionArgs& a, int64_t b, int64_t j, PvFn pv,
                                                  std::vector<float>& sc) {
    const Span s = span(a, b, j);
    const int64_t g = s.g, D = a.D, tot = s.nc + s.ng + s.n;
    sc.resize(static_cast<size_t>(g * tot));
    for (int64_t i = 0; i < g; ++i)
        if (s.nc) std::copy_n(prefix_row(a, s, b, j, i), s.nc, sc.data() + i * tot);
    const float* q = a.q + (b * a.H + j * g) * D;
    if (s.ng) row_scores(q, s.gk, s.ng, g, D / 8, a.scale, sc.data() + s.nc, tot);
    row_scores(q, s.kp, s.n, g, D / 8, a.scale, sc.data() + s.nc + s.ng, tot);
    float inv[kMaxGroup];
    for (int64_t i = 0; i < g; ++i) inv[i] = 1.f / softmax_numerators(sc.data() + i * tot, tot);
    pv(s, sc.data(), tot, D, inv, a.out + (b * a.H + j * g) * D);
}
#endif

// Store the new token's K/V of (sequence b, KV head j) in its row.
void store_new(const RowAttentionArgs& a, int64_t b, int64_t j) {
    if (a.k_new == nullptr) return;
    const int64_t src = (b * a.Hkv + j) * a.D, dst = b * a.row_stride + j * a.head_stride + (a.hi[b] - 1) * a.D;
    std::copy_n(a.k_new + src, a.D, a.k + dst);
    std::copy_n(a.v_new + src, a.D, a.v + dst);
}

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
        const PvFn pv = pv_kernel(a.H / a.Hkv, a.D / 8);
        for (int64_t b = b0; b < b1; ++b)
            for (int64_t j = 0; j < a.Hkv; ++j) {
                store_new(a, b, j);
                avx2_row(a, b, j, pv, sc);
            }
        return;
    }
#endif
    for (int64_t b = b0; b < b1; ++b)
        for (int64_t j = 0; j < a.Hkv; ++j) {
            store_new(a, b, j);
            scalar_row(a, b, j, sc);
        }
}


}  // namespace reversalkit

// ---- Python bindings (declared and called in bindings.cpp) ----
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>
#include "parallel.h"

namespace py = pybind11;

void bind_decode_attention(py::module_& m) {
    m.def(
        "row_attention_f32",
        [](uintptr_t q, uintptr_t k, uintptr_t v, int64_t row_stride, int64_t head_stride, uintptr_t lo,
           uintptr_t hi, uintptr_t prefix_scores, uintptr_t prefix_v, int64_t prefix_len, uintptr_t prefix_lo,
           int64_t B, int64_t H, int64_t Hkv, int64_t D, float scale, uintptr_t out, int64_t num_threads,
           uintptr_t k_new, uintptr_t v_new, uintptr_t group_k, uintptr_t group_v, int64_t group_stride,
           int64_t group_head_stride, uintptr_t group, uintptr_t group_lo, uintptr_t group_hi) {
            if (B < 0 || H <= 0 || Hkv <= 0 || D <= 0 || H % Hkv || prefix_len < 0)
                throw std::invalid_argument("row_attention_f32: bad shape B=" + std::to_string(B) + " H=" +
                                            std::to_string(H) + " Hkv=" + std::to_string(Hkv) + " D=" +
                                            std::to_string(D) + " prefix_len=" + std::to_string(prefix_len));
            if ((k_new == 0) != (v_new == 0))
                throw std::invalid_argument("row_attention_f32: give both k_new and v_new, or neither");
            if (group_k != 0 && (group_v == 0 || group == 0 || group_lo == 0 || group_hi == 0))
                throw std::invalid_argument(
                    "row_attention_f32: group_k needs group_v, group, group_lo and group_hi");
            const reversalkit::RowAttentionArgs a{
                reinterpret_cast<const float*>(q), reinterpret_cast<float*>(k),
                reinterpret_cast<float*>(v), row_stride, head_stride,
                reinterpret_cast<const int64_t*>(lo), reinterpret_cast<const int64_t*>(hi),
                reinterpret_cast<const float*>(prefix_scores), reinterpret_cast<const float*>(prefix_v),
                prefix_len, reinterpret_cast<const int64_t*>(prefix_lo), B, H, Hkv, D, scale,
                reinterpret_cast<float*>(out), reinterpret_cast<const float*>(k_new),
                reinterpret_cast<const float*>(v_new), reinterpret_cast<const float*>(group_k),
                reinterpret_cast<const float*>(group_v), group_stride, group_head_stride,
                reinterpret_cast<const int64_t*>(group), reinterpret_cast<const int64_t*>(group_lo),
                reinterpret_cast<const int64_t*>(group_hi)};
            py::gil_scoped_release release;
            const int64_t T = std::min<int64_t>(num_threads, B / 16);
            reversalkit::parallel_ranges(B, T, [&a](int64_t b0, int64_t b1) { reversalkit::row_attention(a, b0, b1); });
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("row_stride"), py::arg("head_stride"), py::arg("lo"),
        py::arg("hi"), py::arg("prefix_scores"), py::arg("prefix_v"), py::arg("prefix_len"),
        py::arg("prefix_lo"), py::arg("B"), py::arg("H"), py::arg("Hkv"), py::arg("D"), py::arg("scale"),
        py::arg("out"), py::arg("num_threads") = 1, py::arg("k_new") = 0, py::arg("v_new") = 0,
        py::arg("group_k") = 0, py::arg("group_v") = 0, py::arg("group_stride") = 0,
        py::arg("group_head_stride") = 0, py::arg("group") = 0, py::arg("group_lo") = 0, py::arg("group_hi") = 0,
        "Decode attention of one query per sequence over the shared prefix and tokens [lo, hi) of its\n"
        "KV row, on raw float32 buffers given by address (the caller keeps them alive and checks dtypes\n"
        "and layouts): q, out (B, H, D); k, v element (b, j, t, d) at b*row_stride + j*head_stride +\n"
        "t*D + d; lo, hi, prefix_lo int64 (B,); prefix_scores (Hkv, B, H/Hkv, prefix_len), already\n"
        "scaled; prefix_v (Hkv, prefix_len, D). Addresses of the prefix buffers are ignored when\n"
        "prefix_len is 0. k_new, v_new (B, Hkv, D), when given, are first stored at row token hi - 1.\n"
        "group_k, group_v (sample groups: the prompt tail shared by a prompt's samples), element\n"
        "(grp, j, t, d) at grp*group_stride + j*group_head_stride + t*D + d, attended between prefix and\n"
        "row: tokens [group_lo, group_hi) of group[b] (int64 (B,); group[b] < 0: none); 0: no groups.");
    m.def("row_attention_has_avx2", &reversalkit::row_attention_has_avx2);
}
