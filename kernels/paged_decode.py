"""Decode attention: one query token per sequence against its cached K/V, in the engine's two layouts.

    paged_decode(q (B, H, D), k_cache, v_cache, block_tables, context_lens, scale, window) -> (B, H, D)
        K/V in fixed-size blocks read through each sequence's block table (the CUDA layout).
        Paths: "triton" (`_paged_decode_fwd_kernel`; the CPU under TRITON_INTERPRET=1) and "torch"
        (`paged_decode_reference`, a gather).
    row_decode(q (B, H, D), k, v, lo, hi, scale, new_kv=, prefix=, groups=) -> (B, H, D)
        K/V of each sequence contiguous in its own row, plus a shared prefix and per-prompt sample
        groups (the CPU layout of reversalkit.engine.rows, where gathering scattered blocks costs
        ~10x the attention itself). Paths: "cpp" (reversalkit._C.row_attention_f32,
        csrc/decode_attention.cpp: softmax over prefix + group + row and the weighted values in one
        pass per (sequence, KV head)) and "torch" (`row_decode_reference`).

Each op picks its path once per call from `backend` ("auto": Triton on CUDA / C++ for float32 on
the CPU, torch otherwise). Query heads share KV heads in groups of H / Hkv (GQA).

Triton kernel: one program per (sequence, KV head) and all the query heads that share it, walking
the context in tiles of BLOCK_N tokens with an online softmax; the query group is padded to 16 rows
so both products run on tensor cores. Tiles are widened to fp32 after loading (decode is bound by
HBM reads, not math): fp32 caches multiply in IEEE fp32, 16-bit caches in TF32, which holds
bf16/fp16 values exactly and rounds the probabilities more finely than a 16-bit product would. The
interpreter has no bf16 matrix product.
"""

from __future__ import annotations

import torch

from reversalkit._ext import native

from ._backend import next_pow2, resolve_op_backend, tl, triton

NEG_INF = float("-inf")

if triton is not None:

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


def _paged_decode_triton(q, k_cache, v_cache, block_tables, context_lens, scale, window, block_n):
    B, H, D = q.shape
    bs, Hkv = k_cache.shape[1], k_cache.shape[2]
    if k_cache.stride() != v_cache.stride() or k_cache.stride(-1) != 1 or q.stride(-1) != 1:
        raise ValueError("paged_decode: k_cache and v_cache need equal strides and unit stride in the head "
                         "dimension (call .contiguous())")
    if block_tables.dtype != torch.int32 or context_lens.dtype != torch.int32:
        raise ValueError(f"paged_decode: block_tables and context_lens must be int32, got {block_tables.dtype} "
                         f"and {context_lens.dtype}")
    G = H // Hkv
    out = torch.empty_like(q)
    if block_n is None:
        block_n = 64 if q.is_cuda else 16
    _paged_decode_fwd_kernel[(B, Hkv)](
        q, k_cache, v_cache, block_tables, context_lens, out, float(scale), int(window or 0),
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1),
        HAS_WINDOW=window is not None, IEEE=q.dtype == torch.float32, G=G, G_PAD=max(16, next_pow2(G)),
        D=D, D_PAD=max(16, next_pow2(D)), BLOCK_SIZE=bs, BLOCK_N=block_n,
    )
    return out


def paged_decode_reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float,
                           window: int | None = None) -> torch.Tensor:
    """One-query attention through block tables, by gathering each sequence's blocks (fp32, or fp64
    for fp64 inputs). Arguments as `paged_decode` -> (B, H, D) in q's dtype."""
    B, H, D = q.shape
    Hkv = k_cache.shape[2]
    wide = torch.float64 if q.dtype == torch.float64 else torch.float32
    bt = block_tables.long()
    k = k_cache[bt].view(B, -1, Hkv, D).permute(0, 2, 3, 1).to(wide)  # (B, Hkv, D, L)
    v = v_cache[bt].view(B, -1, Hkv, D).transpose(1, 2).to(wide)  # (B, Hkv, L, D)
    s = torch.matmul(q.to(wide).view(B, Hkv, H // Hkv, D), k) * scale  # (B, Hkv, g, L)
    pos = torch.arange(k.shape[-1], device=q.device)
    lens = context_lens.long()[:, None]
    allowed = pos[None, :] < lens
    if window is not None:
        allowed &= pos[None, :] > lens - 1 - window
    s = s.masked_fill(~allowed[:, None, None, :], NEG_INF)
    return torch.matmul(s.softmax(-1), v).view(B, H, D).to(q.dtype)


def paged_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                 context_lens: torch.Tensor, scale: float, window: int | None = None, *, backend: str = "auto",
                 block_n: int | None = None) -> torch.Tensor:
    """Decode attention through block tables.

    q: (B, H, D); k_cache, v_cache: (num_blocks, block_size, Hkv, D); block_tables: (B, max_blocks)
    int32; context_lens: (B,) int32 >= 1, the query being each sequence's last token; window: keys
    more than window - 1 positions before the query are masked -> (B, H, D) in q's dtype.
    backend: "auto" (Triton on CUDA, torch otherwise) | "triton" | "torch".
    """
    if k_cache.shape[-1] != q.shape[-1] or q.shape[1] % k_cache.shape[2]:
        raise ValueError(f"paged_decode: q (B, H={q.shape[1]}, D={q.shape[-1]}) does not match the cache "
                         f"(Hkv={k_cache.shape[2]}, D={k_cache.shape[-1]})")
    path = resolve_op_backend("paged_decode", backend, (q,), triton_fits=True, cpp_entry=None)
    if path == "triton":
        return _paged_decode_triton(q, k_cache, v_cache, block_tables, context_lens, scale, window, block_n)
    return paged_decode_reference(q, k_cache, v_cache, block_tables, context_lens, scale, window)


def row_decode_reference(q, k, v, lo, hi, scale, *, new_kv=None, prefix=None, groups=None) -> torch.Tensor:
    """`row_decode` in batched torch ops, in q's dtype (fp64 inputs make it the tests' oracle).

    Scores are laid out [prefix | group | row], masked outside each sequence's ranges, and only the
    first max(hi) row tokens and max(group_hi) group tokens are read; the prefix's products run as
    one GEMM per KV head for the whole batch.
    """
    B, H, D = q.shape
    Hkv = k.shape[1]
    g = H // Hkv
    if new_kv is not None:
        at = torch.arange(B)
        k[at, :, hi - 1] = new_kv[0]
        v[at, :, hi - 1] = new_kv[1]
    q4 = (q * scale).view(B, Hkv, g, D)
    Lc = prefix[0].shape[1] if prefix is not None else 0
    Gt = int(groups[4].max()) if groups is not None and B else 0
    Lt = int(hi.max()) if B else 0
    scores, masks = [], []
    if Lc:
        pk, pv, plo = prefix  # (Hkv, Lc, D), (Hkv, Lc, D), (B,)
        sc = torch.matmul(q4.permute(1, 0, 2, 3).reshape(Hkv, B * g, D), pk.transpose(1, 2))  # (Hkv, B*g, Lc)
        scores.append(sc.view(Hkv, B, g, Lc).permute(1, 0, 2, 3))
        masks.append(torch.arange(Lc)[None, :] >= plo[:, None])
    if Gt:
        gk, gv, grp, glo, ghi = groups  # (G, Hkv, Gt, D) x 2, (B,) x 3
        gk, gv = gk[grp.clamp(min=0), :, :Gt], gv[grp.clamp(min=0), :, :Gt]  # (B, Hkv, Gt, D)
        scores.append(torch.matmul(q4, gk.transpose(-1, -2)))  # (B, Hkv, g, Gt)
        t = torch.arange(Gt)[None, :]
        masks.append((t >= glo[:, None]) & (t < ghi[:, None]) & (grp[:, None] >= 0))
    scores.append(torch.matmul(q4, k[:B, :, :Lt].transpose(-1, -2)))  # (B, Hkv, g, Lt)
    t = torch.arange(Lt)[None, :]
    masks.append((t >= lo[:, None]) & (t < hi[:, None]))
    s = torch.cat(scores, dim=-1).masked_fill(~torch.cat(masks, dim=1)[:, None, None, :], NEG_INF)
    p = s.softmax(-1)  # (B, Hkv, g, Lc + Gt + Lt)
    o = torch.matmul(p[..., Lc + Gt:], v[:B, :, :Lt])  # (B, Hkv, g, D)
    if Gt:
        o = o + torch.matmul(p[..., Lc:Lc + Gt], gv)
    if Lc:
        oc = torch.matmul(p[..., :Lc].permute(1, 0, 2, 3).reshape(Hkv, B * g, Lc), pv)  # (Hkv, B*g, D)
        o = o + oc.view(Hkv, B, g, D).permute(1, 0, 2, 3)
    return o.reshape(B, H, D)


def _row_decode_cpp(q, k, v, lo, hi, scale, new_kv, prefix, groups):
    B, H, D = q.shape
    Hkv = k.shape[1]
    q = q.contiguous()
    out = torch.empty(B, H, D)
    pre = None
    if prefix is not None and prefix[0].shape[1]:  # scores against the shared prefix: one GEMM, (Hkv, B*g, Lc)
        pk, pv, plo = prefix
        qc = (q * scale).view(B, Hkv, H // Hkv, D).permute(1, 0, 2, 3).reshape(Hkv, -1, D)
        sc = torch.matmul(qc, pk.transpose(1, 2)).view(Hkv, B, H // Hkv, -1)
        pre = (sc.numpy(), pv.numpy(), plo.numpy())
    new = None if new_kv is None else tuple(t.contiguous().numpy() for t in new_kv)
    grp = None if groups is None or not groups[0].shape[0] else tuple(t.numpy() for t in groups)
    native().row_attention_f32(q.numpy(), k.numpy(), v.numpy(), lo.numpy(), hi.numpy(), out.numpy(), scale,
                               torch.get_num_threads(), new, pre, grp)
    return out


def row_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
               scale: float, *, new_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
               prefix: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
               groups: tuple[torch.Tensor, ...] | None = None, backend: str = "auto") -> torch.Tensor:
    """Decode attention over contiguous per-sequence rows, a shared prefix and sample groups.

    q: (B, H, D); k, v: (R >= B, Hkv, T, D), sequence b attends to row tokens [lo[b], hi[b]) of row
    b (lo, hi: (B,) int64, 0 <= lo < hi <= T); new_kv: (k_new, v_new) (B, Hkv, D), first stored at
    row token hi - 1 (k, v are written); prefix: (prefix_k, prefix_v (Hkv, Lc, D), prefix_lo (B,)),
    tokens [prefix_lo[b], Lc) attended; groups: (group_k, group_v (G, Hkv, Gt, D), group, group_lo,
    group_hi (B,) int64), tokens [group_lo[b], group_hi[b]) of group[b] attended (group[b] < 0:
    none). Scores are q . k * scale -> (B, H, D).
    backend: "auto" (C++ for float32 CPU tensors with reversalkit._C built, torch otherwise) |
    "cpp" | "torch".
    """
    path = resolve_op_backend("row_decode", backend, (q, k, v), triton_fits=False, cpp_entry="row_attention_f32",
                              unfit="row_decode has no Triton kernel; the CUDA layout is paged_decode's")
    if path == "cpp":
        return _row_decode_cpp(q, k, v, lo, hi, scale, new_kv, prefix, groups)
    return row_decode_reference(q, k, v, lo, hi, scale, new_kv=new_kv, prefix=prefix, groups=groups)
