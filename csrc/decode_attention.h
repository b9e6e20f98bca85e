// CPU decode attention over contiguous per-sequence KV rows (reversalkit.engine's "rows" path).
//
// One query token per sequence attends to the tokens [lo[b], hi[b]) of its row: scores, softmax
// and the weighted sum of values in one pass per (sequence, KV head), the query heads of a GQA
// group sharing each K/V load. torch's batched GEMMs spend most of their time on per-matrix
// overhead at these sizes (2 x 32 by 32 x ~100 per head); this reads each K and V row once.
// The caller merges the result with the shared-prefix part through the returned log-sum-exp.
//
// Plain C++17 on raw float32 buffers; AVX2/FMA when the CPU has them (runtime dispatch),
// portable scalar code otherwise.
#pragma once

#include <cstdint>

namespace reversalkit {

struct TailAttentionArgs {
    const float* q;       // (B, H, D) contiguous
    const float* k;       // element (b, j, t, d) at b * row_stride + j * head_stride + t * D + d
    const float* v;       // same layout as k
    int64_t row_stride, head_stride;
    const int64_t* lo;    // (B,) first token attended
    const int64_t* hi;    // (B,) one past the last token; hi > lo
    int64_t B, H, Hkv, D;
    float scale;
    float* out;           // (B, H, D): softmax-weighted values
    float* lse;           // (B, H): log-sum-exp of the scaled scores
};

// Rows [b0, b1) of the batch.
void tail_attention(const TailAttentionArgs& a, int64_t b0, int64_t b1);

bool tail_attention_has_avx2();

}  // namespace reversalkit
