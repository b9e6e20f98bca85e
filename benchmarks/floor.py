"""The "gemm-floor" provider of bench_logprob / bench_dpo: the lm_head GEMMs alone.

Every exact log-prob or DPO provider runs logits = h W^T and, with gradients, G W and G^T h:
three GEMMs of 2*N*H*V FLOPs (one without gradients). Timed on their own, in the same chunks,
they are the least time any exact provider can take on the machine's BLAS. This module imports
torch only, so tests can load it by path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class _GemmFloor(torch.autograd.Function):
    """The lm_head GEMMs alone, chunk by chunk: logits = h W^T, then (with gradients) G W and G^T h
    with the logits standing in for G. The log-softmax is left out, so the "gradients" are not a
    loss's: the provider is a yardstick, not a result."""

    @staticmethod
    def forward(ctx, hidden, weight, chunk: int, with_grad: bool):
        h = hidden.reshape(-1, hidden.shape[-1])
        n = h.shape[0]
        buf = torch.empty(min(chunk, n), weight.shape[0], dtype=h.dtype, device=h.device)
        grad_h = torch.empty_like(h) if with_grad else None
        grad_w = torch.zeros_like(weight) if with_grad else None
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            logits = buf[: e - s]
            torch.mm(h[s:e], weight.t(), out=logits)
            if with_grad:
                torch.mm(logits, weight, out=grad_h[s:e])
                grad_w.addmm_(logits.t(), h[s:e])
        ctx.grads = (None if grad_h is None else grad_h.view_as(hidden), grad_w)
        return buf.new_zeros(())

    @staticmethod
    def backward(ctx, _grad):
        grad_h, grad_w = ctx.grads
        ctx.grads = None
        return grad_h, grad_w, None, None


def gemm_floor(hidden: torch.Tensor, weight: torch.Tensor, chunk: int) -> Callable[[], torch.Tensor]:
    """Body of the "gemm-floor" provider: `_GemmFloor` on (rows, H) hidden states in `chunk`-row chunks."""
    with_grad = hidden.requires_grad or weight.requires_grad
    return lambda: _GemmFloor.apply(hidden, weight, chunk, with_grad)
