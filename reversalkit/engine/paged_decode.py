"""Triton paged-attention decode kernel: one query token per sequence, K/V read through block tables.

`paged_decode(q, k_cache, v_cache, block_tables, context_lens, scale, window)` is the launcher;
its oracle is `attention.paged_decode_reference` (a gather in plain torch). One program handles one
(sequence, KV head) pair and all the query heads that share that KV head (GQA), walking the context
in tiles of BLOCK_N tokens with an online softmax; the query group is padded to 16 rows so both
products run on tensor cores. Tiles are widened to fp32 after loading (decode is bound by HBM
reads, not math): fp32 caches multiply in IEEE fp32, 16-bit caches in TF32, which holds bf16/fp16
values exactly and rounds the probabilities more finely than a 16-bit product would. Runs on CUDA,
and on CPU under TRITON_INTERPRET=1 (tests; the interpreter has no bf16 matrix product).

Triton is imported lazily so that the package imports without it.
"""

from __future__ import annotations

import functools

import torch


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@functools.cache
def _kernel():
    import triton  # noqa: PLC0415
    import triton.language as tl  # noqa: PLC0415

    @triton.jit
    def _paged_decode_fwd_kernel(
        Q, K, V, BT, LENS, O, scale, window,
        stride_qb, stride_qh, stride_kb, stride_kt, stride_kh, stride_btb, stride_ob, stride_oh,
        HAS_WINDOW: tl.constexpr, IEEE: tl.constexpr, G: tl.constexpr, G_PAD: tl.constexpr,
        D: tl.constexpr, D_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        b = tl.program_id(0)
        kvh = tl.program_id(1)
        length = tl.load(LENS + b)
        offs_g = tl.arange(0, G_PAD)
        offs_d = tl.arange(0, D_PAD)
        g_ok = offs_g < G
        d_ok = offs_d < D
        q_ptr = Q + b * stride_qb + (kvh * G + offs_g)[:, None] * stride_qh + offs_d[None, :]
        q = tl.load(q_ptr, mask=g_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)  # (G_PAD, D_PAD)
        m_i = tl.full([G_PAD], float("-inf"), tl.float32)
        l_i = tl.zeros([G_PAD], tl.float32)
        acc = tl.zeros([G_PAD, D_PAD], tl.float32)
        lo = 0
        if HAS_WINDOW:
            lo = tl.maximum(length - window, 0)
        start = (lo // BLOCK_N) * BLOCK_N  # every tile holds at least one valid key: no NaN rows
        for n0 in range(start, length, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            valid = (offs_n < length) & (offs_n >= lo)
            blk = tl.load(BT + b * stride_btb + offs_n // BLOCK_SIZE, mask=offs_n < length, other=0)
            row = blk.to(tl.int64) * stride_kb + (offs_n % BLOCK_SIZE) * stride_kt + kvh * stride_kh
            kv_mask = valid[:, None] & d_ok[None, :]
            k = tl.load(K + row[:, None] + offs_d[None, :], mask=kv_mask, other=0.0).to(tl.float32)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(k))
            s = tl.where(valid[None, :], s * scale, float("-inf"))  # (G_PAD, BLOCK_N)
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.exp(s - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(V + row[:, None] + offs_d[None, :], mask=kv_mask, other=0.0).to(tl.float32)
            if IEEE:
                pv = tl.dot(p, v, input_precision="ieee")
            else:
                pv = tl.dot(p, v)
            acc = acc * alpha[:, None] + pv
            m_i = m_new
        out = acc / l_i[:, None]
        o_ptr = O + b * stride_ob + (kvh * G + offs_g)[:, None] * stride_oh + offs_d[None, :]
        tl.store(o_ptr, out.to(O.dtype.element_ty), mask=g_ok[:, None] & d_ok[None, :])

    return _paged_decode_fwd_kernel


def paged_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                 context_lens: torch.Tensor, scale: float, window: int | None = None,
                 block_n: int | None = None) -> torch.Tensor:
    """Decode attention through block tables.

    q: (B, H, D); k_cache, v_cache: (num_blocks, block_size, Hkv, D) with unit stride in D and equal
    strides; block_tables: (B, max_blocks) int32; context_lens: (B,) int32 (>= 1) -> (B, H, D).
    """
    B, H, D = q.shape
    _, bs, Hkv, Dk = k_cache.shape
    if Dk != D or H % Hkv:
        raise ValueError(f"q (B, H={H}, D={D}) does not match the cache (Hkv={Hkv}, D={Dk})")
    if k_cache.stride() != v_cache.stride() or k_cache.stride(-1) != 1 or q.stride(-1) != 1:
        raise ValueError("k_cache and v_cache need equal strides and unit stride in the head dimension")
    if block_tables.dtype != torch.int32 or context_lens.dtype != torch.int32:
        raise ValueError("block_tables and context_lens must be int32")
    G = H // Hkv
    out = torch.empty_like(q)
    if block_n is None:
        block_n = 64 if q.is_cuda else 16
    _kernel()[(B, Hkv)](
        q, k_cache, v_cache, block_tables, context_lens, out, float(scale), int(window or 0),
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1),
        HAS_WINDOW=window is not None, IEEE=q.dtype == torch.float32, G=G, G_PAD=max(16, _next_pow2(G)),
        D=D, D_PAD=max(16, _next_pow2(D)), BLOCK_SIZE=bs, BLOCK_N=block_n,
    )
    return out
