"""SwiGLU's product silu(gate) * up, for the sampler and for training.

    silu_mul(gu (T, 2I)) -> (T, I)              the sampler's: gate and up side by side in one row
                                                (the fused gate/up projection); no gradient
    swiglu(gate (...), up (...)) -> (...)       training's: gradients for both

Paths, picked by `_backend.resolve_op_backend` from device, dtype and availability:
- triton (silu_mul, CUDA): one pass instead of torch's two; silu(gate) is rounded to the input
  dtype before the product, as torch rounds it.
- cpp (swiglu, float32 CPU): reversalkit._C `swiglu_forward_f32` / `swiglu_backward_f32`
  (csrc/train_ops.cpp), one pass each way where autograd runs 2 ops forward and 4 backward; its exp
  is not torch's, so results differ from torch's by float32 rounding. The sampler's CPU path stays
  torch's: greedy decoding must give transformers' tokens.
- torch: `silu_mul_reference` / `swiglu_reference` (the test oracles, run in float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._backend import native, next_pow2, resolve_op_backend, tl, triton

if triton is not None:

    @triton.jit
    def _silu_mul_fwd_kernel(GU, O, N, stride_gu, stride_o, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = cols < N
        g = tl.load(GU + row * stride_gu + cols, mask=ok, other=0.0).to(tl.float32)
        u = tl.load(GU + row * stride_gu + N + cols, mask=ok, other=0.0).to(tl.float32)
        s = (g / (1.0 + tl.exp(-g))).to(O.dtype.element_ty).to(tl.float32)
        tl.store(O + row * stride_o + cols, (s * u).to(O.dtype.element_ty), mask=ok)


def _rows_forward_triton(gu):
    T, inter = gu.shape[0], gu.shape[1] // 2
    out = torch.empty(T, inter, dtype=gu.dtype, device=gu.device)
    block = min(1024, next_pow2(inter))
    if T:
        _silu_mul_fwd_kernel[(T, -(-inter // block))](gu, out, inter, gu.stride(0), out.stride(0), BLOCK=block)
    return out


def silu_mul_reference(gu: torch.Tensor) -> torch.Tensor:
    """Plain torch: silu of the first half of each row times the second half. (T, I)."""
    gate, up = gu.chunk(2, dim=-1)
    return F.silu(gate).mul_(up)


def silu_mul(gu: torch.Tensor, *, backend: str = "auto", overwrite: bool = False) -> torch.Tensor:
    """gu: (T, 2I), gate then up -> silu(gate) * up, (T, I). No gradient.

    backend "auto": Triton on CUDA (gu with unit column stride), torch otherwise (no C++ path).
    overwrite: the torch path may compute in gu's gate half and return that view (no new tensor;
    the same values), for a caller whose gu is a temporary (the sampler's MLP).
    """
    if gu.dim() != 2 or gu.shape[1] % 2:
        raise ValueError(f"silu_mul: gu must be (T, 2I), gate then up, got {tuple(gu.shape)}")
    path = resolve_op_backend("silu_mul", backend, (gu,), triton_fits=gu.stride(-1) == 1, cpp_entry=None)
    if path == "triton":
        return _rows_forward_triton(gu)
    if overwrite:
        gate, up = gu.chunk(2, dim=-1)
        return F.silu(gate, inplace=True).mul_(up)
    return silu_mul_reference(gu)


# ---- training: differentiable SwiGLU ----


class SwiGLUFunction(torch.autograd.Function):
    """The C++ forward and backward on float32 CPU tensors (viewed as flat vectors)."""

    @staticmethod
    def forward(ctx, gate, up):
        g, u = gate.detach().contiguous(), up.detach().contiguous()
        y = torch.empty_like(g)
        native().swiglu_forward_f32(g.view(-1).numpy(), u.view(-1).numpy(), y.view(-1).numpy(),
                                    torch.get_num_threads())
        ctx.save_for_backward(g, u)
        return y

    @staticmethod
    def backward(ctx, dy):
        g, u = ctx.saved_tensors
        dy = dy.contiguous()
        dg, du = torch.empty_like(g), torch.empty_like(u)
        native().swiglu_backward_f32(dy.view(-1).numpy(), g.view(-1).numpy(), u.view(-1).numpy(),
                                     dg.view(-1).numpy(), du.view(-1).numpy(), torch.get_num_threads())
        return dg, du


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """transformers' LlamaMLP product: act_fn(gate) * up with act_fn = silu."""
    return F.silu(gate) * up


def swiglu(gate: torch.Tensor, up: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """silu(gate) * up for tensors of one shape, with gradients for both.
    backend "auto": the C++ pass for float32 CPU tensors, torch otherwise (no Triton path)."""
    if gate.shape != up.shape:
        raise ValueError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} differ in shape")
    path = resolve_op_backend("swiglu", backend, (gate, up), triton_fits=False, cpp_entry="swiglu_forward_f32")
    if path == "cpp":
        return SwiGLUFunction.apply(gate, up)
    return swiglu_reference(gate, up)
