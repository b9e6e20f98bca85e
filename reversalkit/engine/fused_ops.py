"""Triton kernels for the elementwise parts of a decode step on CUDA: residual add + RMSNorm,
SiLU(gate) * up, and RoPE on the fused q/k projection.

At a decode batch of 128 on a ~1B model, the torch compositions of these ops (a cast, a square, a
mean, an rsqrt and two products per RMSNorm; roll and three products for RoPE; two passes for the
SwiGLU product) launch ~200 small kernels per step and take about a third of the step's GPU time.
Each op here is one pass over its input. The kernels round where torch rounds: a bf16 residual sum
is rounded to bf16 before the norm reads it, the normalised row is rounded to the input dtype
before the weight multiplies it (as transformers' LlamaRMSNorm does), silu(gate) is rounded before
the product with up, and RoPE rounds each of its two products and their sum. Only the order of the
fp32 sum of squares differs from torch.

Measured on an H100 (benchmarks/RESULTS.md): a 1.2B Llama's decode step at batch 128 went from
3.03 ms to 1.99 ms. The `*_reference` functions are the torch forms (the model's path off CUDA
and the kernels' test oracle). Runs on CUDA, and on the CPU under TRITON_INTERPRET=1 (tests).
Triton is imported lazily.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@functools.cache
def _kernels():
    import triton  # noqa: PLC0415
    import triton.language as tl  # noqa: PLC0415

    @triton.jit
    def add_rms_norm_kernel(X, R, W, O, eps, N, stride_x, stride_r, stride_o,
                            HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        ok = cols < N
        x = tl.load(X + row * stride_x + cols, mask=ok, other=0.0)
        if HAS_RES:
            r = tl.load(R + row * stride_r + cols, mask=ok, other=0.0)
            x = (x.to(tl.float32) + r.to(tl.float32)).to(X.dtype.element_ty)  # the residual stream's rounding
            tl.store(X + row * stride_x + cols, x, mask=ok)
        xf = x.to(tl.float32)
        inv = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / N + eps)
        w = tl.load(W + cols, mask=ok, other=0.0).to(tl.float32)
        y = (xf * inv).to(X.dtype.element_ty).to(tl.float32) * w
        tl.store(O + row * stride_o + cols, y.to(O.dtype.element_ty), mask=ok)

    @triton.jit
    def silu_mul_kernel(GU, O, N, stride_gu, stride_o, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = cols < N
        g = tl.load(GU + row * stride_gu + cols, mask=ok, other=0.0).to(tl.float32)
        u = tl.load(GU + row * stride_gu + N + cols, mask=ok, other=0.0).to(tl.float32)
        s = (g / (1.0 + tl.exp(-g))).to(O.dtype.element_ty).to(tl.float32)
        tl.store(O + row * stride_o + cols, (s * u).to(O.dtype.element_ty), mask=ok)

    @triton.jit
    def rope_kernel(QKV, POS, COS, SIN, O, n_heads, stride_qkv, stride_cos, stride_o,
                    D: tl.constexpr, HALF: tl.constexpr, BLOCK_H: tl.constexpr):
        # out[t, h, j] = x[j] * cos[p, j] + x[j -+ D/2] * sin_signed[p, j], with x = qkv[t, h*D:(h+1)*D]
        t = tl.program_id(0).to(tl.int64)
        heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        j = tl.arange(0, D)
        ok = (heads < n_heads)[:, None] & (j < D)[None, :]
        p = tl.load(POS + t).to(tl.int64)
        base = QKV + t * stride_qkv + heads[:, None] * D
        x = tl.load(base + j[None, :], mask=ok, other=0.0).to(tl.float32)
        xr = tl.load(base + ((j + HALF) % D)[None, :], mask=ok, other=0.0).to(tl.float32)
        c = tl.load(COS + p * stride_cos + j).to(tl.float32)
        s = tl.load(SIN + p * stride_cos + j).to(tl.float32)
        dt = O.dtype.element_ty
        a = (x * c[None, :]).to(dt).to(tl.float32)
        b = (xr * s[None, :]).to(dt).to(tl.float32)
        tl.store(O + t * stride_o + heads[:, None] * D + j[None, :], (a + b).to(dt), mask=ok)

    return add_rms_norm_kernel, silu_mul_kernel, rope_kernel


def add_rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float, residual: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """x: (T, N) with unit column stride; with residual, x += residual in place first.
    -> (T, N): x / rms(x) rounded to x's dtype, times w."""
    T, N = x.shape
    out = torch.empty_like(x)
    res = x if residual is None else residual
    if T:
        _kernels()[0][(T,)](x, res, w, out, float(eps), N, x.stride(0), res.stride(0), out.stride(0),
                            HAS_RES=residual is not None, BLOCK=_next_pow2(N),
                            num_warps=4 if N <= 4096 else 8)
    return out


def silu_mul(gu: torch.Tensor) -> torch.Tensor:
    """gu: (T, 2I), gate then up -> silu(gate) * up, (T, I)."""
    T, I2 = gu.shape
    inter = I2 // 2
    out = torch.empty(T, inter, dtype=gu.dtype, device=gu.device)
    block = min(1024, _next_pow2(inter))
    if T:
        _kernels()[1][(T, -(-inter // block))](gu, out, inter, gu.stride(0), out.stride(0), BLOCK=block)
    return out


def rope(qkv: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor, n: int,
         head_dim: int) -> torch.Tensor:
    """The first n heads of qkv (T, >= n * D) rotated by RoPE at `positions` (T,) -> (T, n, D);
    cos, sin_signed: (max_position, D) tables (sin_signed negated on its first half)."""
    T, D = qkv.shape[0], head_dim
    if D & (D - 1):
        raise ValueError(f"the fused RoPE kernel needs a power-of-two head_dim, got {D}")
    out = torch.empty(T, n, D, dtype=qkv.dtype, device=qkv.device)
    block_h = min(16, _next_pow2(n))
    if T:
        _kernels()[2][(T, -(-n // block_h))](qkv, positions, cos, sin_signed, out, n, qkv.stride(0),
                                            cos.stride(0), out.stride(0), D=D, HALF=D // 2, BLOCK_H=block_h)
    return out


# ---- the torch forms (the model's CPU path and the kernels' test oracle) ----


def add_rms_norm_reference(x: torch.Tensor, w: torch.Tensor, eps: float, residual: torch.Tensor | None = None
                           ) -> torch.Tensor:
    if residual is not None:
        x += residual
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), w, eps)
    var = x.float().pow(2).mean(-1, keepdim=True)  # transformers upcasts low-precision inputs
    return w * (x.float() * torch.rsqrt(var + eps)).to(x.dtype)


def silu_mul_reference(gu: torch.Tensor) -> torch.Tensor:
    gate, up = gu.chunk(2, dim=-1)
    return F.silu(gate).mul_(up)


def rope_reference(qkv: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor,
                   n: int, head_dim: int) -> torch.Tensor:
    D = head_dim
    qk = qkv[:, :n * D].view(qkv.shape[0], n, D)
    return qk * cos[positions].unsqueeze(1) + qk.roll(D // 2, -1) * sin_signed[positions].unsqueeze(1)
