"""Rotary position embedding on the sampler's fused q/k/v projection.

    rope(qkv (T, >= n * D), positions (T,), cos (P, D), sin_signed (P, D), n) -> (T, n, D)

The first n heads of each row (q, then k) rotated: out = x * cos[p] + roll(x, D/2) * sin_signed[p],
with sin_signed = [-sin_1, sin_2], so that roll(x) * sin_signed == rotate_half(x) * sin (one roll
instead of transformers' slices and cat). Each product and the sum are rounded separately, as
torch's separate ops round them.

Paths, picked by `_backend.resolve_op_backend` from device, dtype and availability:
- triton (CUDA, power-of-two D): one program per (token, block of heads), one pass.
- cpp (float32 CPU): reversalkit._C `rope_f32` (csrc/decode_step.cpp), bitwise equal to the
  reference (no FMA contraction), without the reference's roll copy.
- torch: `rope_reference` (the test oracle, run in float64).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._backend import native, next_pow2, resolve_op_backend, tl, triton

if triton is not None:

    @triton.jit
    def _rope_fwd_kernel(QKV, POS, COS, SIN, O, n_heads, stride_qkv, stride_cos, stride_o,
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


def _rows_forward_triton(qkv, positions, cos, sin_signed, n):
    T, D = qkv.shape[0], cos.shape[1]
    out = torch.empty(T, n, D, dtype=qkv.dtype, device=qkv.device)
    block_h = min(16, next_pow2(n))
    if T:
        _rope_fwd_kernel[(T, -(-n // block_h))](qkv, positions, cos, sin_signed, out, n, qkv.stride(0),
                                                cos.stride(0), out.stride(0), D=D, HALF=D // 2, BLOCK_H=block_h)
    return out


def rope_reference(qkv: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor,
                   n: int) -> torch.Tensor:
    """Plain torch: roll, two products and a sum. (T, n, D), in qkv's dtype."""
    return _rotate(qkv, cos[positions].unsqueeze(1), sin_signed[positions].unsqueeze(1), n)


def _rotate(qkv: torch.Tensor, cos_t: torch.Tensor, sin_t: torch.Tensor, n: int) -> torch.Tensor:
    """The reference's arithmetic on tables already gathered at the positions: cos_t, sin_t (T, 1, D)."""
    D = cos_t.shape[-1]
    qk = qkv[:, :n * D].view(qkv.shape[0], n, D)
    return qk * cos_t + qk.roll(D // 2, -1) * sin_t


def _check_tables(positions, cos, sin_signed):
    if cos.dim() != 2 or sin_signed.shape != cos.shape or cos.shape[1] % 2:
        raise ValueError(f"rope: cos and sin_signed must be (P, D) with D even, got {tuple(cos.shape)} and "
                         f"{tuple(sin_signed.shape)}")
    if positions.dim() != 1:
        raise ValueError(f"rope: positions must be (T,), got {tuple(positions.shape)}")


def _check_qkv(qkv, positions, n, D):
    if qkv.dim() != 2 or qkv.shape[1] < n * D or qkv.shape[0] != positions.shape[0]:
        raise ValueError(f"rope: qkv must be (T, >= n * D = {n * D}) with T = {positions.shape[0]} positions, "
                         f"got {tuple(qkv.shape)}")


def _resolve(backend, tensors, positions, cos, sin_signed, unit_stride=True, grad_free=True):
    D = cos.shape[1]
    return resolve_op_backend(
        "rope", backend, tensors, triton_fits=not D & (D - 1) and unit_stride, cpp_entry="rope_f32",
        cpp_fits=(unit_stride and grad_free and positions.dtype == torch.int64 and positions.is_contiguous()
                  and cos.is_contiguous() and sin_signed.is_contiguous()))


def _bind(path, positions, cos, sin_signed) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """rope(qkv, n) on a resolved path for fixed positions and tables, their per-call work done once."""
    D = cos.shape[1]
    if path == "triton":
        def triton_path(qkv: torch.Tensor, n: int) -> torch.Tensor:
            _check_qkv(qkv, positions, n, D)  # the kernel reads n * D columns of each row
            return _rows_forward_triton(qkv, positions, cos, sin_signed, n)
        return triton_path
    if path == "cpp":
        pos_a, cos_a, sin_a, ext = positions.numpy(), cos.numpy(), sin_signed.numpy(), native()

        def cpp(qkv: torch.Tensor, n: int) -> torch.Tensor:
            out = torch.empty(qkv.shape[0], n, D)
            ext.rope_f32(qkv.numpy(), pos_a, cos_a, sin_a, out.numpy())  # checks every argument
            return out
        return cpp
    cos_t, sin_t = cos[positions].unsqueeze(1), sin_signed[positions].unsqueeze(1)  # (T, 1, D)
    return lambda qkv, n: _rotate(qkv, cos_t, sin_t, n)


def rope_fn(positions: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor, *, backend: str = "auto"
            ) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """`rope` with the path picked once, from the tables, for every qkv of one forward pass:
    rope_fn(positions, cos, sin_signed)(qkv, n) == rope(qkv, positions, cos, sin_signed, n). qkv must
    have the tables' device and dtype (the C++ pass checks it)."""
    _check_tables(positions, cos, sin_signed)
    return _bind(_resolve(backend, (cos, sin_signed), positions, cos, sin_signed), positions, cos, sin_signed)


def rope(qkv: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor, n: int, *,
         backend: str = "auto") -> torch.Tensor:
    """The first n heads of qkv (T, >= n * D) rotated by RoPE at `positions` (T,) -> (T, n, D);
    cos, sin_signed: (P, D) tables, sin_signed negated on its first half. No gradient.

    backend "auto": Triton on CUDA for a power-of-two D, the C++ pass for float32 CPU tensors, torch
    otherwise. Positions must lie in [0, P) (checked on the C++ path; the others index the tables).
    """
    _check_tables(positions, cos, sin_signed)
    _check_qkv(qkv, positions, n, cos.shape[1])
    path = _resolve(backend, (qkv, cos, sin_signed), positions, cos, sin_signed, qkv.stride(-1) == 1,
                    not qkv.requires_grad)
    return _bind(path, positions, cos, sin_signed)(qkv, n)
