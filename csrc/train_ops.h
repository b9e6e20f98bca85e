// Training-time elementwise ops of Llama-family decoders, forward and backward, on contiguous
// float32 rows: RMSNorm (weight * x / rms(x)) and SwiGLU's gate (silu(g) * u). Each is one pass
// over its inputs where autograd runs 5-10 separate torch ops. Plain C++17 on raw buffers; the
// loops use AVX2/FMA when the CPU has them (runtime dispatch). Reductions accumulate in double.
#pragma once

#include <cstdint>

namespace reversalkit {

struct RmsNormTrainArgs {
    const float* x;   // (rows, H)
    const float* w;   // (H,)
    float* y;         // (rows, H): w * x * rstd
    float* rstd;      // (rows,): 1 / sqrt(mean(x^2) + eps), kept for the backward
    int64_t H;
    double eps;
};

void rms_norm_train_forward(const RmsNormTrainArgs& a, int64_t r0, int64_t r1);

struct RmsNormGradArgs {
    const float* dy;    // (rows, H)
    const float* x;     // (rows, H)
    const float* w;     // (H,)
    const float* rstd;  // (rows,) from the forward
    float* dx;          // (rows, H)
    int64_t H;
};

// dx for rows [r0, r1); adds the rows' share of d weight = sum_rows dy * x * rstd into dw (H doubles).
void rms_norm_train_backward(const RmsNormGradArgs& a, int64_t r0, int64_t r1, double* dw);

// y = silu(g) * u over elements [i0, i1).
void swiglu_forward(const float* g, const float* u, float* y, int64_t i0, int64_t i1);

// dg = dy * u * silu'(g), du = dy * silu(g) over elements [i0, i1).
void swiglu_backward(const float* dy, const float* g, const float* u, float* dg, float* du, int64_t i0,
                     int64_t i1);

}  // namespace reversalkit
