"""Per-token log-probs straight from hidden states and the lm_head weight, without (N, V) logits.

    linear_token_logprobs(hidden (N, H), weight (V, H), targets (N,), ignore_index=-100,
                          chunk_size=None, *, grad_in_forward=True) -> (N,) float32

Forward: token chunks of `chunk_size` rows; each chunk's logits (rows, V) come from one GEMM and go
through the row kernel of `logprob.py` (online log-sum-exp + target gather); lse (N,) is kept.
When a gradient will be wanted (grad_in_forward, grad mode on, an input requiring grad), each chunk
goes on as in `fused_loss.fused_rows` with a unit upstream gradient: its logits become
onehot - softmax in place and give d_hidden[chunk] = G @ W and d_weight += G^T h (2 more GEMMs).
Backward with upstream g (N,): grad_hidden = g * d_hidden row by row, exact for any g; grad_weight
= g0 * d_weight when g is one value g0 on every counted row (a token sum or mean: 3 GEMMs in all,
as the naive path). For per-row g (per-sequence weights) grad_weight needs softmax again: the
recompute path below runs for it alone (5 GEMMs in all); callers that know their g varies, such
as `sequence_logprobs`, pass grad_in_forward=False.
Recompute path (grad_in_forward=False, or a second backward): vocabulary tiles; each tile's logits
(N, Vt) are recomputed by one GEMM, turned in place into g * (onehot - softmax) by the row kernel,
and then give grad_weight[tile] = G^T h in one GEMM (written once) and grad_hidden += G @ W[tile]
into an fp32 (N, H) accumulator: 4 GEMMs in all.
Peak extra memory is one chunk or tile of logits plus the gradients themselves (held from the
forward to the backward on the grad_in_forward path).

Triton kernels: the row kernels in `logprob.py`; the GEMMs are cuBLAS (torch.mm), which run the
dominant FLOPs at the card's matmul rate.
"""

from __future__ import annotations

import torch

from ._backend import addmm_fp32_, chunk_rows, compute_dtype, mm_into, resolve_backend
from ._checks import check_linear
from .fused_loss import fused_rows, row_bounds
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
        logits = buf[: (e - s) * v].view(e - s, v)  # (c, V)
        mm_into(logits, hidden[s:e], weight.t())
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


def _uniform_grad(grad: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor | None:
    """The common value (0-d) of grad over non-ignored rows, or None when the rows differ."""
    g = grad[targets != ignore_index]
    if g.numel() == 0:
        return grad.new_zeros(())
    return g[0] if bool((g == g[0]).all()) else None


def _backward_from_stash(ctx, grad, need_hidden, need_weight):
    """Scale the unit-gradient parts computed in the forward: (grad_hidden | None, grad_weight | None).

    Row i's hidden gradient is grad[i] * d_hidden[i] for any grad; the weight gradient sums rows, so
    d_weight serves only a grad that is the same on every counted row (None otherwise: recompute).
    Scaled in place: the stash is consumed, and a second backward (retain_graph) recomputes.
    """
    d_hidden, d_weight = ctx.stash
    ctx.stash = None
    targets = ctx.saved_tensors[2]
    grad_h = grad_w = None
    if need_hidden:
        g = torch.where(targets != ctx.ignore_index, grad, 0.0)  # (N,): a nan/inf on an ignored row stays out
        grad_h = d_hidden.mul_(g.unsqueeze(1))
    if need_weight:
        g0 = _uniform_grad(grad, targets, ctx.ignore_index)
        grad_w = None if g0 is None else d_weight.mul_(g0)
    return grad_h, grad_w


class LinearTokenLogprobsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, chunk, backend, grad_in_forward):
        cdt = compute_dtype(hidden)
        h, w = hidden.to(cdt), weight.to(cdt)
        ctx.stash = None
        if grad_in_forward:
            # Unit upstream gradient on every counted row: d_hidden (N, H) and d_weight (V, H), kept in
            # the accumulation dtype (fp32, fp64 for fp64) so the scaling in backward adds one rounding.
            lse = torch.empty(hidden.shape[0], dtype=torch.float64, device=hidden.device)
            logp, d_hidden, d_weight = fused_rows(
                h,
                w,
                targets,
                row_bounds(h.shape[0], chunk),
                lambda s, e, lp: torch.ones_like(lp),
                ignore_index,
                backend,
                need_rows=ctx.needs_input_grad[0],
                need_weight=ctx.needs_input_grad[1],
                weight_dtype=None,
                lse_out=lse,
            )
            ctx.stash = (d_hidden, d_weight)
        else:
            logp, lse = linear_logprobs_forward(h, w, targets, ignore_index, chunk, backend)
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.ignore_index, ctx.chunk, ctx.backend = ignore_index, chunk, backend
        return logp

    @staticmethod
    def backward(ctx, grad_logp):
        hidden, weight, targets, lse = ctx.saved_tensors
        grad = grad_logp.float().contiguous()
        need_h, need_w = ctx.needs_input_grad[:2]
        grad_h = grad_w = None
        if ctx.stash is not None:
            grad_h, grad_w = _backward_from_stash(ctx, grad, need_h, need_w)
        if (need_h and grad_h is None) or (need_w and grad_w is None):
            cdt = compute_dtype(hidden)
            rec_h, rec_w = linear_logprobs_backward(
                hidden.to(cdt),
                weight.to(cdt),
                targets,
                lse,
                grad,
                ctx.ignore_index,
                ctx.chunk,
                ctx.backend,
                need_hidden=need_h and grad_h is None,
                need_weight=need_w and grad_w is None,
                weight_dtype=weight.dtype,
            )
            grad_h = rec_h if grad_h is None else grad_h
            grad_w = rec_w if grad_w is None else grad_w
        grad_h = None if grad_h is None else grad_h.to(hidden.dtype)
        grad_w = None if grad_w is None else grad_w.to(weight.dtype)
        return grad_h, grad_w, None, None, None, None, None


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
    grad_in_forward: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """log softmax(hidden @ weight.T)[target] per row -> (N,) float32, never holding all (N, V) logits.

    hidden: (N, H); weight: (V, H) (the lm_head); targets: (N,) ids or `ignore_index` (gives 0, no
    gradient; drop such rows beforehand to save their compute). chunk_size: token rows per forward
    chunk (default: as many as fit 64 MiB of fp32 logits on CPU, 512 MiB on CUDA); the backward's
    vocabulary tiles hold as many logits as one chunk. Gradients flow to hidden and weight; bf16/fp16
    inputs accumulate in fp32. The GEMMs run in hidden's dtype (as autocast would run the lm_head),
    and grad_weight comes back in weight's dtype.
    grad_in_forward: compute the gradients during the forward (see the module docstring): 3 GEMMs
    when the upstream gradient is the same for every counted row, 5 when it varies by row; False
    always gives 4 and holds no gradient between forward and backward.
    """
    check_linear(hidden, weight, targets, ignore_index)
    path = resolve_backend(backend, hidden)
    chunk = chunk_rows(hidden.shape[0], weight.shape[0], hidden.device, chunk_size)
    early = grad_in_forward and torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return LinearTokenLogprobsFunction.apply(
        hidden, weight, targets.contiguous(), ignore_index, chunk, path, early
    )
