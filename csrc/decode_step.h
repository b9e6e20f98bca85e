// Per-token work of the CPU decode step around attention (reversalkit.engine's model and sampler):
// token sampling, rotary embedding, residual add + RMSNorm. Plain C++17 on raw float32 buffers;
// the sampler uses AVX2/FMA when the CPU has them (runtime dispatch), the RoPE and RMSNorm loops
// keep torch's float rounding order so their results are bitwise torch's.
#pragma once

#include <cstdint>

namespace reversalkit {

// Token sampling for the decode step: temperature, then top-p by rejection (draw from the full
// distribution, redraw while the token lies outside the nucleus), one counter-based uniform per
// draw so a row's tokens never depend on the rest of the batch. No sort: a draw costs three
// passes over the vocabulary (max, exp + block sums, block-skipping CDF search), plus one for a
// drawn token of probability <= 1 - top_p. Mirrors reversalkit.kernels.sample_top_p.
struct SampleArgs {
    const float* logits;   // row b at logits + b * row_stride, V floats
    int64_t B, V, row_stride;
    float temperature;     // > 0
    float top_p;           // (0, 1]; 1 = no truncation
    const int64_t* keys;      // (B,) uint64 bit patterns
    const int64_t* counters;  // (B,)
    int64_t max_rounds;    // draws per row before giving up (-1 in out)
    int64_t* out;          // (B,)
};

void sample_rows(const SampleArgs& a, int64_t b0, int64_t b1);

// Rotary embedding of the decode step's q and k heads in one pass (torch needs a roll, which
// copies through a cat, two products and a sum): out = x * cos + roll(x, D/2) * sin_signed, where
// sin_signed = [-sin_1, sin_2] (so roll(x) * sin_signed == rotate_half(x) * sin), each product and
// the sum rounded separately as torch does: bitwise the same values.
struct RopeArgs {
    const float* x;            // row t (heads * D floats) at x + t * x_stride
    int64_t x_stride;
    const int64_t* positions;  // (T,)
    const float* cos;          // (P, D)
    const float* sin_signed;   // (P, D)
    int64_t heads, D;
    float* out;                // (T, heads, D) contiguous
};

void rope_rows(const RopeArgs& a, int64_t t0, int64_t t1);

// RMSNorm of rows, optionally fused with the residual add before it, in one pass per row instead
// of torch's seven ops: x += residual; out = x * (1 / sqrt(sum(x^2) / N + eps)) * w, every float
// operation in torch's order (its cascaded sum reduction's too), so the values match torch's
// F.rms_norm bit for bit where its reduction is the one mirrored here (measured: every width that
// is a multiple of 32, from 32 to 4096; callers verify their width).
struct RmsNormArgs {
    float* x;               // (T, N) contiguous; updated in place when residual is given
    const float* residual;  // (T, N) or nullptr
    const float* w;         // (N,)
    float eps;
    int64_t N;
    float* out;             // (T, N)
};

void rms_norm_rows(const RmsNormArgs& a, int64_t t0, int64_t t1);

}  // namespace reversalkit
