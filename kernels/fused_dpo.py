"""Fused linear DPO: hidden states + lm_head -> DPO loss, gradients computed chunk by chunk in the forward.

    linear_dpo_loss(hidden (2B, T, H), weight (V, H), input_ids (2B, T), completion_mask (2B, T),
                    ref_chosen_logps (B,), ref_rejected_logps (B,), *, beta=0.1, loss_type="sigmoid",
                    label_smoothing=0.0, nll_weight=0.0) -> FusedDPOOutput

Rows 0..B-1 of the batch are the chosen completions, rows B..2B-1 the rejected ones (the
concatenated layout TRL uses). The scored positions (see `sequence.shifted_rows`) are regrouped
pair by pair, chunks hold whole pairs (as many as fit the logits budget), and each chunk's pairs
get their loss and d loss / d logp as soon as the chunk's logits are reduced; `fused_rows` then
multiplies the gradients out while the chunk's logits are still in memory. Same value and
gradients as sequence_logprobs -> dpo_loss (+ nll_weight * chosen NLL per token, RPO), 3 GEMMs.
ref log-probs are summed over completion tokens; for "ipo" both policy and reference are divided
by the completion length, as TRL does.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._backend import chunk_rows, compute_dtype, resolve_backend
from ._checks import check_dpo_args, check_target_range
from .dpo import dpo_forward
from .fused_loss import fused_rows
from .sequence import shifted_rows


class FusedDPOOutput(NamedTuple):
    loss: torch.Tensor  # scalar: mean over pairs of the DPO loss + nll_weight * chosen NLL per token
    chosen_rewards: torch.Tensor  # (B,) beta * (pi_c - ref_c), detached
    rejected_rewards: torch.Tensor  # (B,)
    chosen_logps: torch.Tensor  # (B,) summed completion log-probs, detached
    rejected_logps: torch.Tensor  # (B,)
    nll: torch.Tensor  # scalar: chosen NLL per completion token, detached


def _pair_chunks(pair_rows: list[int], budget_rows: int) -> list[tuple[int, int, int, int]]:
    """Greedy (row_start, row_end, pair_start, pair_end) chunks of whole pairs, <= budget rows unless one
    pair alone is larger."""
    chunks, r0, p0, rows = [], 0, 0, 0
    for p, n in enumerate(pair_rows):
        if rows and rows + n > budget_rows:
            chunks.append((r0, r0 + rows, p0, p))
            r0, p0, rows = r0 + rows, p, 0
        rows += n
    if rows or not chunks:
        chunks.append((r0, r0 + rows, p0, len(pair_rows)))
    return chunks


class _DPOChunkLoss:
    """chunk_grad for `fused_rows`: per-sequence sums, the chunk's pair losses, d loss / d logp per row."""

    def __init__(self, seq_sorted, counts, ref_c, ref_r, chunks, cfg):
        # Sums, references and margins in float64 (see `sequence._reduce`): the margin of two sums of
        # hundreds of log-probs is formed before anything is rounded to float32.
        self.seq, self.counts, self.ref_c, self.ref_r = (
            seq_sorted,
            counts.double(),
            ref_c.double(),
            ref_r.double(),
        )
        self.pairs_of = {r0: (p0, p1) for r0, _, p0, p1 in chunks}
        self.beta, self.loss_type, self.eps, self.nll_weight, self.backend = cfg
        self.b = ref_c.shape[0]
        self.sums = torch.zeros(2 * self.b, dtype=torch.float64, device=ref_c.device)
        self.loss = torch.zeros((), dtype=torch.float64, device=ref_c.device)
        self.n_chosen = max(int(counts[: self.b].sum()), 1)

    def __call__(self, s: int, e: int, lp: torch.Tensor) -> torch.Tensor:
        b, seq = self.b, self.seq[s:e]
        p0, p1 = self.pairs_of[s]
        self.sums.index_add_(0, seq, lp.double())
        pc, pr, rc, rr = self.sums[p0:p1], self.sums[b + p0 : b + p1], self.ref_c[p0:p1], self.ref_r[p0:p1]
        norm_c = norm_r = torch.ones_like(pc)
        if self.loss_type == "ipo":  # length-normalised log-ratios
            norm_c, norm_r = self.counts[p0:p1].clamp(min=1), self.counts[b + p0 : b + p1].clamp(min=1)
        margin = ((pc - rc) / norm_c - (pr - rr) / norm_r).float()  # rounded once
        zero = torch.zeros_like(margin)  # dpo_forward forms (pc - rc) - (pr - rr): the margin goes in whole
        loss, dldm = dpo_forward(margin, zero, zero, zero, self.beta, self.loss_type, self.eps, self.backend)
        self.loss += loss.double().sum() / b
        coef = torch.zeros(2 * b, dtype=torch.float64, device=lp.device)
        coef[p0:p1] = dldm.double() / (b * norm_c)
        coef[b + p0 : b + p1] = -dldm.double() / (b * norm_r)
        g = coef[seq]  # (c,)
        if self.nll_weight:
            g = g - torch.where(seq < b, self.nll_weight / self.n_chosen, 0.0)
        return g.float()


class _FusedDPOFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, input_ids, completion_mask, ref_c, ref_r, cfg, chunk_size):
        beta, loss_type, eps, nll_weight, backend = cfg
        b = ref_c.shape[0]
        rows, targets, seq_index, counts = shifted_rows(hidden, input_ids, completion_mask)
        order = torch.argsort((seq_index % b) * 2 + (seq_index >= b), stable=True)  # pair by pair
        pair_rows = (counts[:b] + counts[b:]).tolist()
        budget = chunk_rows(rows.shape[0], weight.shape[0], hidden.device, chunk_size)
        chunks = _pair_chunks(pair_rows, budget)
        chunk_loss = _DPOChunkLoss(seq_index[order], counts, ref_c, ref_r, chunks, cfg)
        cdt = compute_dtype(hidden)
        logp, grad_rows, grad_w = fused_rows(
            rows[order].to(cdt),
            weight.to(cdt),
            targets[order],
            [(r0, r1) for r0, r1, _, _ in chunks],
            chunk_loss,
            -100,
            backend,
            need_rows=ctx.needs_input_grad[0],
            need_weight=ctx.needs_input_grad[1],
            weight_dtype=weight.dtype,
        )
        grad_hidden = None
        if grad_rows is not None:
            grad_hidden = torch.zeros_like(hidden)
            unsorted = torch.empty_like(grad_rows)
            unsorted[order] = grad_rows
            grad_hidden[:, :-1][completion_mask[:, 1:].bool()] = unsorted.to(hidden.dtype)
        ctx.save_for_backward(grad_hidden, grad_w)
        sums = chunk_loss.sums  # (2B,) float64
        nll = -(sums[:b].sum() / chunk_loss.n_chosen)
        loss = (chunk_loss.loss + nll_weight * nll).float()
        outs = (
            (beta * (sums[:b] - ref_c.double())).float(),
            (beta * (sums[b:] - ref_r.double())).float(),
            sums[:b].float(),
            sums[b:].float(),
            nll.float(),
        )
        ctx.mark_non_differentiable(*outs)
        return (loss, *outs)

    @staticmethod
    def backward(ctx, grad_loss, *_):
        grad_hidden, grad_w = ctx.saved_tensors
        gh = None if grad_hidden is None else grad_hidden * grad_loss.to(grad_hidden.dtype)
        gw = None if grad_w is None else grad_w * grad_loss.to(grad_w.dtype)
        return gh, gw, None, None, None, None, None, None


def linear_dpo_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    input_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    nll_weight: float = 0.0,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> FusedDPOOutput:
    """DPO loss from hidden states in one fused pass; see the module docstring for layout and semantics.

    chunk_size: token rows per chunk (rounded to whole pairs); default fits the logits budget.
    Gradients reach hidden and weight (not the reference log-probs).
    """
    if hidden.dim() != 3 or hidden.shape[0] % 2:
        raise ValueError(f"hidden must be (2B, T, H) with chosen rows first, got shape {tuple(hidden.shape)}")
    b = hidden.shape[0] // 2
    check_dpo_args(
        torch.Size([b]),
        {"ref_chosen_logps": ref_chosen_logps, "ref_rejected_logps": ref_rejected_logps},
        beta,
        loss_type,
        label_smoothing,
        "mean",
    )
    if nll_weight < 0:
        raise ValueError(f"nll_weight must be >= 0, got {nll_weight}")
    check_target_range(input_ids.reshape(-1), weight.shape[0], -100)
    path = resolve_backend(backend, hidden)
    cfg = (float(beta), loss_type, float(label_smoothing), float(nll_weight), path)
    out = _FusedDPOFunction.apply(
        hidden,
        weight,
        input_ids,
        completion_mask,
        ref_chosen_logps.detach(),
        ref_rejected_logps.detach(),
        cfg,
        chunk_size,
    )
    return FusedDPOOutput(*out)
