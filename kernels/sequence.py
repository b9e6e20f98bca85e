"""Per-sequence completion log-probs from a causal LM's hidden states: the input of SFT and DPO.

    sequence_logprobs(hidden (B, T, H), weight (V, H), input_ids (B, T), completion_mask (B, T))
        -> (sum (B,), mean (B,)) float32

Shifting: the hidden state at position t predicts token t+1, so hidden[:, t] is scored against
input_ids[:, t+1] wherever completion_mask[:, t+1] is set (the mask marks the completion tokens
themselves, prompt and padding are 0). Only those positions go through
`linear_token_logprobs`, so prompt and padding cost no lm_head FLOPs. `mean` is sum / number of
completion tokens (0 for a row without any).
"""

from __future__ import annotations

import torch

from .linear_logprob import linear_token_logprobs, linear_token_logprobs_reference


def _check(hidden, input_ids, completion_mask):
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be (B, T, H), got shape {tuple(hidden.shape)}")
    if input_ids.shape != hidden.shape[:2] or completion_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and completion_mask {tuple(completion_mask.shape)} must both be "
            f"(B, T) = {tuple(hidden.shape[:2])} to match hidden"
        )


def shifted_rows(hidden: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor):
    """(rows (M, H), targets (M,), seq_index (M,), counts (B,)) of the scored positions, in row order."""
    _check(hidden, input_ids, completion_mask)
    target_mask = completion_mask[:, 1:].bool()  # (B, T-1): position t scores token t+1
    rows = hidden[:, :-1][target_mask]  # (M, H)
    targets = input_ids[:, 1:][target_mask]  # (M,)
    b = hidden.shape[0]
    seq_index = torch.arange(b, device=hidden.device).unsqueeze(1).expand_as(target_mask)[target_mask]  # (M,)
    return rows, targets, seq_index, target_mask.sum(dim=1)


def _reduce(token_logps, seq_index, counts, b):
    """Per-sequence (sums, means) in token_logps' dtype, accumulated in float64 and rounded once.

    A float32 running sum (index_add adds in order) of a few hundred log-probs of ~-10 drifts by
    many ulps of the total, which DPO's margin of two such sums then carries into its loss and
    gradients; the float64 sum keeps them at the rounding of the result.
    """
    sums = torch.zeros(b, dtype=torch.float64, device=token_logps.device).index_add(
        0, seq_index, token_logps.double()
    )
    means = sums / counts.clamp(min=1).double()
    return sums.to(token_logps.dtype), means.to(token_logps.dtype)


def sequence_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    input_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    chunk_size: int | None = None,
    grad_in_forward: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean log-probs of each row's completion tokens: ((B,), (B,)) float32.

    hidden: (B, T, H) last hidden states; weight: (V, H) lm_head; input_ids: (B, T);
    completion_mask: (B, T), nonzero at completion tokens. Differentiable w.r.t. hidden and weight.
    grad_in_forward: see `linear_token_logprobs`; off by default because a loss on these sums gives
    each sequence's tokens their own upstream gradient (DPO, a mean of means), and then the weight
    gradient computed in the forward would be thrown away. Turn it on for a loss whose gradient is
    the same for every token, such as the sum of `sum` over sequences.
    """
    rows, targets, seq_index, counts = shifted_rows(hidden, input_ids, completion_mask)
    token_logps = linear_token_logprobs(
        rows, weight, targets, chunk_size=chunk_size, grad_in_forward=grad_in_forward, backend=backend
    )  # (M,)
    return _reduce(token_logps, seq_index, counts, hidden.shape[0])


def sequence_logprobs_reference(
    hidden: torch.Tensor, weight: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive mirror of `sequence_logprobs`: full logits of every position, log_softmax, masked sums."""
    _check(hidden, input_ids, completion_mask)
    b, t, h = hidden.shape
    mask = completion_mask[:, 1:].bool()
    targets = torch.where(mask, input_ids[:, 1:], -100).reshape(-1)
    logps = linear_token_logprobs_reference(hidden[:, :-1].reshape(-1, h), weight, targets).view(b, t - 1)
    sums = (logps * mask).sum(dim=1)
    return sums, sums / mask.sum(dim=1).clamp(min=1).to(sums.dtype)
