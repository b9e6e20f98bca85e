"""Losses on log-probs whose gradients are computed during the forward: 3 GEMMs instead of 4.

    linear_nll_loss(hidden (N, H), weight (V, H), targets (N,), ignore_index=-100, reduction="mean")
    linear_dpo_loss(...)  in fused_dpo.py, on the same engine (`fused_rows`)

When the loss is known up front and is separable over chunks of rows (a token mean; a mean over
pairs, each chunk holding whole pairs), each chunk's upstream gradient is known right after that
chunk's forward: the chunk's logits are turned in place into g * (onehot - softmax)
and multiplied out at once (grad_hidden rows, grad_weight += G^T h in fp32), and backward only
scales the stored gradients by the incoming scalar. This is the Liger fused-linear scheme, done
without torch.func and without materialising log_softmax next to the logits.
`linear_token_logprobs` runs the same pass with a unit upstream gradient and scales in backward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._backend import addmm_fp32_, chunk_rows, compute_dtype, mm_into, resolve_backend
from ._checks import check_linear
from .logprob import grad_from_exp_, logprob_rows_backward, logprob_rows_forward, rows_forward_consuming

# chunk_grad(start, end, logp (c,)) -> d loss / d logp for rows [start, end), fp32 (c,)
ChunkGrad = Callable[[int, int, torch.Tensor], torch.Tensor]


def fused_rows(
    rows: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bounds: list[tuple[int, int]],
    chunk_grad: ChunkGrad,
    ignore_index: int,
    backend: str,
    *,
    need_rows: bool,
    need_weight: bool,
    weight_dtype: torch.dtype | None,
    lse_out: torch.Tensor | None = None,
):
    """One pass over row chunks: (logp (M,), grad_rows (M, H) | None, grad_weight (V, H) | None).

    rows, weight: in the compute dtype. Chunks are processed in `bounds` order, so chunk_grad may
    rely on the log-probs of earlier chunks. Gradients accumulate in fp32 (fp64 for fp64 rows);
    grad_weight comes back in `weight_dtype`, or in the accumulator's dtype when that is None.
    lse_out: optional (M,) fp64, receives each row's log-sum-exp (what a later recompute needs).
    """
    m, v = rows.shape[0], weight.shape[0]
    acc_dtype = torch.float64 if rows.dtype == torch.float64 else torch.float32
    logp = torch.zeros(m, dtype=torch.float32, device=rows.device)
    grad_rows = torch.empty(rows.shape, dtype=acc_dtype, device=rows.device) if need_rows else None
    acc = torch.zeros(weight.shape, dtype=acc_dtype, device=rows.device) if need_weight else None
    widest = max((e - s for s, e in bounds), default=0)
    buf = torch.empty(widest * v, dtype=rows.dtype, device=rows.device)
    consume = backend == "torch" and rows.dtype in (torch.float32, torch.float64)
    for s, e in bounds:
        logits = buf[: (e - s) * v].view(e - s, v)  # (c, V)
        mm_into(logits, rows[s:e], weight.t())
        if consume:
            lp, lse, sumexp = rows_forward_consuming(logits, targets[s:e], ignore_index)
        else:
            lp, lse = logprob_rows_forward(logits, targets[s:e], ignore_index, backend)
        logp[s:e] = lp
        if lse_out is not None:
            lse_out[s:e] = lse
        g = chunk_grad(s, e, lp)  # always called: it may also accumulate the loss
        if not (need_rows or need_weight):
            continue
        if consume:
            grad_from_exp_(logits, targets[s:e], sumexp, g, ignore_index)  # G (c, V)
        else:
            logprob_rows_backward(logits, targets[s:e], lse, g, ignore_index, backend, out=logits)
        if need_rows:
            mm_into(grad_rows[s:e], logits, weight)
        if need_weight:
            addmm_fp32_(acc, logits.t(), rows[s:e])
    if acc is not None and weight_dtype is not None:
        acc = acc.to(weight_dtype)
    return logp, grad_rows, acc


def row_bounds(n: int, step: int) -> list[tuple[int, int]]:
    """[(start, end)) chunks of `step` rows covering n rows."""
    return [(s, min(s + step, n)) for s in range(0, n, step)]


class _FusedNLLFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, chunk, reduction, backend):
        cdt = compute_dtype(hidden)
        n_valid = int((targets != ignore_index).sum()) if reduction == "mean" else 1
        scale = 1.0 / max(n_valid, 1)
        grad_of = lambda s, e, lp: torch.full_like(lp, -scale)  # loss = -scale * sum(logp)
        logp, grad_h, grad_w = fused_rows(
            hidden.to(cdt),
            weight.to(cdt),
            targets,
            row_bounds(hidden.shape[0], chunk),
            grad_of,
            ignore_index,
            backend,
            need_rows=ctx.needs_input_grad[0],
            need_weight=ctx.needs_input_grad[1],
            weight_dtype=weight.dtype,
        )
        ctx.save_for_backward(grad_h, grad_w)
        ctx.hidden_dtype = hidden.dtype
        return -scale * logp.sum()

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        gh = None if grad_h is None else (grad_h * grad_loss).to(ctx.hidden_dtype)
        gw = None if grad_w is None else grad_w * grad_loss.to(grad_w.dtype)
        return gh, gw, None, None, None, None, None


def linear_nll_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: int | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """-mean (or -sum) of log softmax(hidden @ weight.T)[target] over non-ignored rows; a scalar.

    Same value as `-linear_token_logprobs(...).sum() / n_valid`, with gradients computed in the
    forward (3 GEMMs). hidden: (N, H); weight: (V, H); targets: (N,).
    """
    check_linear(hidden, weight, targets, ignore_index)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    path = resolve_backend(backend, hidden)
    chunk = chunk_rows(hidden.shape[0], weight.shape[0], hidden.device, chunk_size)
    return _FusedNLLFunction.apply(hidden, weight, targets.contiguous(), ignore_index, chunk, reduction, path)
