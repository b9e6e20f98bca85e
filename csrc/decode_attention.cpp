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

#include <string>

#include "arrays.h"
#include "parallel.h"

namespace py = pybind11;

namespace {

constexpr const char* kFn = "row_attention_f32";

// The i-th member of an optional tuple argument (`what` names its members for the message).
py::array member(const py::object& t, size_t i, size_t n, const char* name, const char* what) {
    if (!py::isinstance<py::tuple>(t) || py::len(t) != n)
        reversalkit::bad_argument(kFn, name, std::string("must be None or a tuple ") + what);
    const py::object m = py::reinterpret_borrow<py::tuple>(t)[i];
    if (!py::isinstance<py::array>(m))
        reversalkit::bad_argument(kFn, name, std::string("must hold numpy arrays ") + what + " (pass tensor.numpy())");
    return py::reinterpret_borrow<py::array>(m);
}

// Values of an int64 (B,) index array must lie in [lo, hi] (offsets into buffers: checked, not trusted).
void check_range(const int64_t* x, int64_t B, int64_t lo, int64_t hi, const char* name, const char* why) {
    for (int64_t b = 0; b < B; ++b)
        if (x[b] < lo || x[b] > hi)
            reversalkit::bad_argument(kFn, name, "has " + std::to_string(x[b]) + " at row " + std::to_string(b) +
                                                     ", outside [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                                     "] (" + why + ")");
}

}  // namespace

void bind_decode_attention(py::module_& m) {
    m.def(
        "row_attention_f32",
        [](const py::array& q, const py::array& k, const py::array& v, const py::array& lo, const py::array& hi,
           const py::array& out, float scale, int64_t num_threads, const py::object& new_kv,
           const py::object& prefix, const py::object& groups) {
            using reversalkit::checked;
            using reversalkit::stride_of;
            reversalkit::RowAttentionArgs a{};
            a.q = checked<float>(q, kFn, "q", {-1, -1, -1});
            a.B = q.shape(0), a.H = q.shape(1), a.D = q.shape(2);
            if (a.H <= 0 || a.D <= 0)
                reversalkit::bad_argument(kFn, "q", "must have at least one head and head_dim > 0, got shape " +
                                                    reversalkit::shape_str(q));
            a.k = checked<float>(k, kFn, "k", {-1, -1, -1, a.D}, true, true);
            a.Hkv = k.shape(1);
            if (a.Hkv <= 0 || a.H % a.Hkv)
                reversalkit::bad_argument(kFn, "k", "has " + std::to_string(a.Hkv) + " KV heads, which must divide "
                                                    "q's " + std::to_string(a.H) + " heads");
            if (k.shape(0) < a.B)
                reversalkit::bad_argument(kFn, "k", "has " + std::to_string(k.shape(0)) + " rows, fewer than q's B = " +
                                                    std::to_string(a.B));
            const int64_t T = k.shape(2), g = a.H / a.Hkv;
            a.v = checked<float>(v, kFn, "v", {k.shape(0), a.Hkv, T, a.D}, true, true);
            a.row_stride = stride_of<float>(k, 0), a.head_stride = stride_of<float>(k, 1);
            a.lo = checked<int64_t>(lo, kFn, "lo", {a.B});
            a.hi = checked<int64_t>(hi, kFn, "hi", {a.B});
            check_range(a.lo, a.B, 0, T - 1, "lo", "row tokens");
            check_range(a.hi, a.B, 1, T, "hi", "row tokens");
            for (int64_t b = 0; b < a.B; ++b)
                if (a.hi[b] <= a.lo[b])
                    reversalkit::bad_argument(kFn, "hi", "must exceed lo at every row, got lo = hi = " +
                                                         std::to_string(a.lo[b]) + " at row " + std::to_string(b));
            a.out = checked<float>(out, kFn, "out", {a.B, a.H, a.D}, true, true);
            a.scale = scale;
            if (!new_kv.is_none()) {
                const char* what = "(k_new, v_new) of shape (B, Hkv, D)";
                a.k_new = checked<float>(member(new_kv, 0, 2, "new_kv", what), kFn, "k_new", {a.B, a.Hkv, a.D});
                a.v_new = checked<float>(member(new_kv, 1, 2, "new_kv", what), kFn, "v_new", {a.B, a.Hkv, a.D});
            }
            if (!prefix.is_none()) {
                const char* what = "(scores (Hkv, B, H/Hkv, Lc), prefix_v (Hkv, Lc, D), prefix_lo (B,))";
                const py::array sc = member(prefix, 0, 3, "prefix", what);
                a.prefix_scores = checked<float>(sc, kFn, "prefix scores", {a.Hkv, a.B, g, -1});
                a.prefix_len = sc.shape(3);
                a.prefix_v = checked<float>(member(prefix, 1, 3, "prefix", what), kFn, "prefix_v",
                                            {a.Hkv, a.prefix_len, a.D});
                a.prefix_lo = checked<int64_t>(member(prefix, 2, 3, "prefix", what), kFn, "prefix_lo", {a.B});
                check_range(a.prefix_lo, a.B, 0, INT64_MAX, "prefix_lo", "prefix tokens");
            }
            if (!groups.is_none()) {
                const char* what = "(group_k, group_v (G, Hkv, Gt, D), group, group_lo, group_hi (B,))";
                const py::array gk = member(groups, 0, 5, "groups", what);
                a.group_k = checked<float>(gk, kFn, "group_k", {-1, a.Hkv, -1, a.D});
                const int64_t G = gk.shape(0), Gt = gk.shape(2);
                const py::array gv = member(groups, 1, 5, "groups", what);
                a.group_v = checked<float>(gv, kFn, "group_v", {G, a.Hkv, Gt, a.D});
                a.group_stride = stride_of<float>(gk, 0), a.group_head_stride = stride_of<float>(gk, 1);
                a.group = checked<int64_t>(member(groups, 2, 5, "groups", what), kFn, "group", {a.B});
                a.group_lo = checked<int64_t>(member(groups, 3, 5, "groups", what), kFn, "group_lo", {a.B});
                a.group_hi = checked<int64_t>(member(groups, 4, 5, "groups", what), kFn, "group_hi", {a.B});
                check_range(a.group, a.B, INT64_MIN, G - 1, "group", "group indices; < 0 for none");
                check_range(a.group_lo, a.B, 0, Gt, "group_lo", "group tokens");
                check_range(a.group_hi, a.B, 0, Gt, "group_hi", "group tokens");
            }
            py::gil_scoped_release release;
            const int64_t threads = std::min<int64_t>(num_threads, a.B / 16);
            reversalkit::parallel_ranges(a.B, threads,
                                         [&a](int64_t b0, int64_t b1) { reversalkit::row_attention(a, b0, b1); });
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("lo"), py::arg("hi"), py::arg("out"), py::arg("scale"),
        py::arg("num_threads") = 1, py::arg("new_kv") = py::none(), py::arg("prefix") = py::none(),
        py::arg("groups") = py::none(),
        "Decode attention of one query per sequence over the shared prefix, its sample group and tokens\n"
        "[lo, hi) of its KV row, on float32 numpy views (checked: a wrong one raises ValueError naming it).\n"
        "q, out (B, H, D); k, v (R >= B, Hkv, T, D) rows, written where new_kv is stored; lo, hi int64 (B,)\n"
        "with 0 <= lo < hi <= T. new_kv: None or (k_new, v_new) (B, Hkv, D), first stored at row token\n"
        "hi - 1. prefix: None or (scores (Hkv, B, H/Hkv, Lc) already scaled, prefix_v (Hkv, Lc, D),\n"
        "prefix_lo int64 (B,)). groups: None or (group_k, group_v (G, Hkv, Gt, D), group, group_lo,\n"
        "group_hi int64 (B,)): tokens [group_lo, group_hi) of group[b] (< 0: none), attended between\n"
        "prefix and row.");
    m.def("row_attention_has_avx2", &reversalkit::row_attention_has_avx2);
}
