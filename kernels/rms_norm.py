"""RMSNorm over the last dimension: y = w * x / sqrt(mean(x^2) + eps).

    add_rms_norm(x (T, N), w (N,), eps, residual=None) -> (T, N)    the sampler's: with residual,
                                                  x += residual in place first; no gradient
    rms_norm(x (..., H), weight (H,), eps) -> (..., H)              training's: gradients for both

Paths, picked by `_backend.resolve_op_backend` from device, dtype and availability:
- triton (add_rms_norm, CUDA): one program per row, one pass. It rounds where torch rounds: a
  16-bit residual sum is rounded before the norm reads it, and the normalised row is rounded to
  x's dtype before the weight multiplies it (as transformers' LlamaRMSNorm does); only the order of
  the fp32 sum of squares differs from torch. Measured on an H100 with the RoPE and SiLU-mul
  kernels (benchmarks/RESULTS.md): a 1.2B Llama's decode step at batch 128, 3.03 ms -> 1.99 ms.
- cpp: add_rms_norm -> reversalkit._C `rms_norm_f32` (csrc/decode_step.cpp), torch's float order
  step for step, so bitwise F.rms_norm at the widths whose reduction it mirrors; it is taken only at
  widths where that equality was checked (`_cpp_is_bitwise`). rms_norm -> `rms_norm_train_forward_f32`
  / `rms_norm_train_backward_f32` (csrc/train_ops.cpp): one pass each way where autograd runs ~5 ops
  forward and ~10 backward; sums in double, so results differ from torch's by float32 rounding.
- torch: `add_rms_norm_reference` / `rms_norm_reference` (the test oracles, run in float64).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ._backend import native, next_pow2, resolve_op_backend, tl, triton

if triton is not None:

    @triton.jit
    def _add_rms_norm_fwd_kernel(X, R, W, O, eps, N, stride_x, stride_r, stride_o,
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


def _rows_forward_triton(x, w, eps, residual):
    T, N = x.shape
    out = torch.empty_like(x)
    res = x if residual is None else residual
    if T:
        _add_rms_norm_fwd_kernel[(T,)](x, res, w, out, float(eps), N, x.stride(0), res.stride(0), out.stride(0),
                                       HAS_RES=residual is not None, BLOCK=next_pow2(N),
                                       num_warps=4 if N <= 4096 else 8)
    return out


def _rows_forward_cpp(x, w, eps, residual):
    out = torch.empty_like(x)
    native().rms_norm_f32(x.numpy(), None if residual is None else residual.numpy(), w.numpy(), eps,
                          out.numpy())
    return out


def add_rms_norm_rows_forward(x: torch.Tensor, w: torch.Tensor, eps: float, residual: torch.Tensor | None,
                              path: str) -> torch.Tensor:
    """add_rms_norm on a resolved path ("triton" | "cpp" | "torch"); see `add_rms_norm`."""
    if path == "triton":
        return _rows_forward_triton(x, w, eps, residual)
    if path == "cpp":
        return _rows_forward_cpp(x, w, eps, residual)
    return add_rms_norm_reference(x, w, eps, residual)


@functools.cache
def _cpp_is_bitwise(N: int, eps: float) -> bool:
    """Whether `rms_norm_f32` equals F.rms_norm bit for bit at width N (rows from 1e-3 to 1e3 in scale).
    Deterministic in (N, eps), so one check per width serves the process."""
    if N <= 0:
        return False
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, N, generator=g) * torch.logspace(-3, 3, 64)[:, None]
    w = torch.randn(N, generator=g)
    return torch.equal(_rows_forward_cpp(x, w, eps, None), F.rms_norm(x, (N,), w, eps))


def add_rms_norm_reference(x: torch.Tensor, w: torch.Tensor, eps: float, residual: torch.Tensor | None = None
                           ) -> torch.Tensor:
    """Plain torch, rounding as transformers' LlamaRMSNorm does; with residual, x += residual first."""
    if residual is not None:
        x += residual
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), w, eps)
    var = x.float().pow(2).mean(-1, keepdim=True)  # transformers upcasts low-precision inputs
    return w * (x.float() * torch.rsqrt(var + eps)).to(x.dtype)


def add_rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float, residual: torch.Tensor | None = None, *,
                 backend: str = "auto") -> torch.Tensor:
    """x: (T, N), w: (N,) -> (T, N): x / rms(x) rounded to x's dtype, times w. With residual (T, N),
    x += residual in place first (the residual stream), rounded to x's dtype. No gradient.

    backend "auto": Triton on CUDA (x and residual with unit column stride); on the CPU, the C++ pass
    for contiguous float32 rows at widths where it is bitwise torch's; torch otherwise.
    """
    tensors = (x, w) if residual is None else (x, w, residual)
    # layout tests only for the path that needs them: the decode step calls this ~2x per layer
    triton_fits = (x.is_cuda or backend == "triton") and x.stride(-1) == 1 and (
        residual is None or residual.stride(-1) == 1)
    cpp_fits = not x.is_cuda and not x.requires_grad and all(t.is_contiguous() for t in tensors)
    path = resolve_op_backend("add_rms_norm", backend, tensors, triton_fits=triton_fits, cpp_entry="rms_norm_f32",
                              cpp_fits=cpp_fits)
    if path == "cpp":  # the C++ entry checks shapes itself
        if backend == "auto" and (x.dim() != 2 or not _cpp_is_bitwise(x.shape[1], float(eps))):
            path = "torch"
    if path != "cpp" and (x.dim() != 2 or w.shape != x.shape[1:] or (
            residual is not None and residual.shape != x.shape)):
        raise ValueError(f"add_rms_norm: x must be (T, N), w (N,) and residual None or (T, N), got "
                         f"{tuple(x.shape)}, {tuple(w.shape)} and "
                         f"{None if residual is None else tuple(residual.shape)}")
    return add_rms_norm_rows_forward(x, w, eps, residual, path)


# ---- training: differentiable RMSNorm ----


class RMSNormFunction(torch.autograd.Function):
    """The C++ forward and backward on float32 CPU rows (x viewed as (rows, H))."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        h = x.shape[-1]
        x2 = x.detach().contiguous().view(-1, h)
        w = weight.detach().contiguous()
        y = torch.empty_like(x2)
        rstd = torch.empty(x2.shape[0], dtype=torch.float32)
        native().rms_norm_train_forward_f32(x2.numpy(), w.numpy(), y.numpy(), rstd.numpy(), float(eps),
                                            torch.get_num_threads())
        ctx.save_for_backward(x2, w, rstd)
        ctx.shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, w, rstd = ctx.saved_tensors
        dy2 = dy.contiguous().view(x2.shape)
        dx = torch.empty_like(x2)
        dw = torch.empty_like(w)
        native().rms_norm_train_backward_f32(dy2.numpy(), x2.numpy(), w.numpy(), rstd.numpy(), dx.numpy(),
                                             dw.numpy(), torch.get_num_threads())
        return dx.view(ctx.shape), dw, None


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm.forward: normalise in float32 (or float64), round to x's dtype, times weight."""
    dtype = x.dtype
    h = x.to(torch.float64 if dtype == torch.float64 else torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, *, backend: str = "auto") -> torch.Tensor:
    """weight * x / sqrt(mean(x^2, -1) + eps): x (..., H), weight (H,) -> (..., H), with gradients for
    x and weight. backend "auto": the C++ pass for float32 CPU tensors, torch otherwise (no Triton path)."""
    if x.shape[-1:] != weight.shape:
        raise ValueError(f"rms_norm: weight {tuple(weight.shape)} does not match the last dim of x "
                         f"{tuple(x.shape)}")
    path = resolve_op_backend("rms_norm", backend, (x, weight), triton_fits=False,
                              cpp_entry="rms_norm_train_forward_f32", cpp_fits=x.shape[-1] > 0)
    if path == "cpp":
        return RMSNormFunction.apply(x, weight, eps)
    return rms_norm_reference(x, weight, eps)
