// CPU decode attention over contiguous per-sequence KV rows (reversalkit.engine's "rows" path).
//
// One query token per sequence attends to the shared prefix (through its precomputed scores, one
// GEMM for the whole batch), to the tokens [group_lo[b], group_hi[b]) of its sample group (the
// prompt tail that the n samples of one prompt share, stored once) and to the tokens [lo[b], hi[b])
// of its own row: softmax over all three and the weighted sum of values in one pass per (sequence,
// KV head), the query heads of a GQA group sharing each K/V load. torch's batched GEMMs spend most of their time on per-matrix
// overhead at these sizes (2 x 32 by 32 x ~100 per head), and merging the two parts takes a
// dozen more small ops; here each K and V row is read once.
//
// Plain C++17 on raw float32 buffers; AVX2/FMA when the CPU has them (runtime dispatch),
// portable scalar code otherwise.
#pragma once

#include <cstdint>

namespace reversalkit {

struct RowAttentionArgs {
    const float* q;        // (B, H, D) contiguous
    float* k;              // element (b, j, t, d) at b * row_stride + j * head_stride + t * D + d
    float* v;              // same layout as k
    int64_t row_stride, head_stride;
    const int64_t* lo;     // (B,) first row token attended
    const int64_t* hi;     // (B,) one past the last row token; hi > lo
    const float* prefix_scores;  // (Hkv, B, g, Lc) scaled scores against the shared prefix
    const float* prefix_v;       // (Hkv, Lc, D)
    int64_t prefix_len;          // Lc (0: no prefix)
    const int64_t* prefix_lo;    // (B,) first prefix token attended (sliding windows)
    int64_t B, H, Hkv, D;
    float scale;           // applied to the row scores (the prefix scores come scaled)
    float* out;            // (B, H, D)
    // (B, Hkv, D) K/V of the new tokens, stored at row token hi[b] - 1 before attending (so the
    // row's last line is written and read while in cache); nullptr when already stored.
    const float* k_new = nullptr;
    const float* v_new = nullptr;
    // Sample groups: element (grp, j, t, d) at grp * group_stride + j * group_head_stride + t * D + d.
    const float* group_k = nullptr;  // nullptr: no groups
    const float* group_v = nullptr;
    int64_t group_stride = 0, group_head_stride = 0;
    const int64_t* group = nullptr;     // (B,) group of each sequence, < 0 for none
    const int64_t* group_lo = nullptr;  // (B,) first group token attended
    const int64_t* group_hi = nullptr;  // (B,) one past the last (the group's length)
};

// Rows [b0, b1) of the batch.
void row_attention(const RowAttentionArgs& a, int64_t b0, int64_t b1);

bool row_attention_has_avx2();

}  // namespace reversalkit
