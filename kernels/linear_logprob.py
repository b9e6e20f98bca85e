"""Per-token log-probs straight from hidden states and the lm_head weight, without (N, V) logits.

    linear_token_logprobs(hidden (N, H), weight (V, H), targets (N,), ignore_index=-100,
                          chunk_size=None) -> (N,) float32

Forward: token chunks of `chunk_size` rows; each chunk's logits (rows, V) come from one GEMM and go
through the row kernel of `logprob.py` (online log-sum-exp + target gather); only lse (N,) is kept.
Backward: vocabulary tiles; each tile's logits (N, Vt) are recomputed by one GEMM, turned in place
into g * (onehot - softmax) by the row kernel, and then give grad_weight[tile] = G^T h in one GEMM
(written once: no accumulation error, no fp32 copy of the weight) and grad_hidden += G @ W[tile]
into an fp32 (N, H) accumulator. Peak extra memory is one chunk or tile of logits plus the
gradients themselves.

The price of never storing logits is one extra GEMM (the recompute): 4 GEMMs against the naive 3.
When the loss is known at forward time, `fused_loss.py` computes the gradients in the forward and
needs only 3.

Triton kernels: the row kernels in `logprob.py`; the GEMMs are cuBLAS (torch.mm), which run the
dominant FLOPs at the card's matmul rate.
"""

from __future__ import annotations

import torch

from ._backend import (
    addmm_fp32_,
    check_rows,
    check_target_range,
    chunk_rows,
    compute_dtype,
    mm_into,
    resolve_backend,
)
from .logprob import (
    logprob_rows_backward,
    logprob_rows_forward,
    rows_forward_consuming,
    token_logprobs_reference,
)


def _buffer(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.empty(numel, dtype=dtype, device=device)


def linear_logprobs_forward(hidden, weight, targets, ignore_index, chunk, backend):
    """(logp (N,) fp32, lse (N,) fp64); hidden/weight already in the compute dtype."""
    n, v = hidden.shape[0], weight.shape[0]
    logp = torch.empty(n, dtype=torch.float32, device=hidden.device)
    lse = torch.empty(n, dtype=torch.float64, device=hidden.device)
    buf = _buffer(min(chunk, n) * v, hidden.dtype, hidden.device)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        logits = torch.mm(hidden[s:e], weight.t(), out=buf[: (e - s) * v].view(e - s, v))  # (c, V)
        if backend == "torch" and logits.dtype in (torch.float32, torch.float64):
            logp[s:e], lse[s:e], _ = rows_forward_consuming(logits, targets[s:e], ignore_index)
        else:
            logp[s:e], lse[s:e] = logprob_rows_forward(logits, targets[s:e], ignore_index, backend)
    return logp, lse


def linear_logprobs_backward(
    hidden,
    weight,
    targets,
    lse,
    grad,
    ignore_index,
    chunk,
    backend,
    *,
    need_hidden: bool,
    need_weight: bool,
    weight_dtype: torch.dtype,
):
    """(grad_hidden (N, H) fp32 | None, grad_weight (V, H) in weight_dtype | None), vocab-tiled.

    A tile holds as many logits as a forward chunk: (N, chunk * V / N).
    """
    n, v = hidden.shape[0], weight.shape[0]
    tile = max(1, min(v, chunk * v // max(n, 1)))
    grad_h = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if need_hidden else None
    grad_w = torch.empty(weight.shape, dtype=weight_dtype, device=weight.device) if need_weight else None
    buf = _buffer(n * min(tile, v), hidden.dtype, hidden.device)
    for c0 in range(0, v, tile):
        c1 = min(c0 + tile, v)
        w_t = weight[c0:c1]  # (Vt, H)
        g_tile = torch.mm(hidden, w_t.t(), out=buf[: n * (c1 - c0)].view(n, c1 - c0))  # (N, Vt) logits
        logprob_rows_backward(g_tile, targets, lse, grad, ignore_index, backend, out=g_tile, col_offset=c0)
        if grad_w is not None:
            mm_into(grad_w[c0:c1], g_tile.t(), hidden)
        if grad_h is not None:
            addmm_fp32_(grad_h, g_tile, w_t)
    return grad_h, grad_w


class LinearTokenLogprobsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, chunk, backend):
        cdt = compute_dtype(hidden)
        h, w = hidden.to(cdt), weight.to(cdt)
        logp, lse = linear_logprobs_forward(h, w, targets, ignore_index, chunk, backend)
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.ignore_index, ctx.chunk, ctx.backend = ignore_index, chunk, backend
        return logp

    @staticmethod
    def backward(ctx, grad_logp):
        hidden, weight, targets, lse = ctx.saved_tensors
        cdt = compute_dtype(hidden)
        grad_h, grad_w = linear_logprobs_backward(
            hidden.to(cdt),
            weight.to(cdt),
            targets,
            lse,
            grad_logp.float().contiguous(),
            ctx.ignore_index,
            ctx.chunk,
            ctx.backend,
            need_hidden=ctx.needs_input_grad[0],
            need_weight=ctx.needs_input_grad[1],
            weight_dtype=weight.dtype,
        )
        grad_h = None if grad_h is None else grad_h.to(hidden.dtype)
        return grad_h, grad_w, None, None, None, None


def linear_token_logprobs_reference(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Naive: full (N, V) logits in the input dtype, fp32 (fp64 for fp64 inputs) log_softmax, gather."""
    return token_logprobs_reference(hidden @ weight.t(), targets, ignore_index)


def linear_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    chunk_size: int | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """log softmax(hidden @ weight.T)[target] per row -> (N,) float32, never holding all (N, V) logits.

    hidden: (N, H); weight: (V, H) (the lm_head); targets: (N,) ids or `ignore_index` (gives 0, no
    gradient; drop such rows beforehand to save their compute). chunk_size: token rows per forward
    chunk (default: as many as fit 64 MiB of fp32 logits on CPU, 512 MiB on CUDA); the backward's
    vocabulary tiles hold as many logits as one chunk. Gradients flow to
    hidden and weight; bf16/fp16 inputs accumulate in fp32. The GEMMs run in hidden's dtype (as
    autocast would run the lm_head), and grad_weight comes back in weight's dtype.
    """
    check_rows("hidden", hidden, targets)
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"weight must be (V, {hidden.shape[1]}) to match hidden (N, H), got {tuple(weight.shape)}"
        )
    if weight.device != hidden.device:
        raise ValueError(f"weight is on {weight.device} but hidden is on {hidden.device}")
    check_target_range(targets, weight.shape[0], ignore_index)
    path = resolve_backend(backend, hidden)
    chunk = chunk_rows(hidden.shape[0], weight.shape[0], hidden.device, chunk_size)
    return LinearTokenLogprobsFunction.apply(hidden, weight, targets.contiguous(), ignore_index, chunk, path)
