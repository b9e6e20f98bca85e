"""Direct preference optimisation against cached reference log-probs, plus the reference pass.

The reference model (M_{t-1}) is never held in memory beside the policy: `reference_logprobs` runs
it once, without gradients, and returns the summed completion log-probs of every pair, which the
study caches in its run directory and passes to `train_dpo`. Each micro-batch puts the chosen and
rejected sequences of its pairs through the decoder together, running each pair's prompt once
(`DPOTrainConfig.share_prompt`).

Loss of a step = mean over the step's pairs of the DPO loss + nll_weight * (sum of -log p over
the chosen completions' tokens) / (their number), through `reversalkit.kernels.linear_dpo_loss`
(lm_head, log-probs, loss and their gradients in one fused pass; 'ipo' length-normalises the
log-ratios as TRL does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from reversalkit.train.config import DPOTrainConfig, TrainResult
from reversalkit.train.cpu_ops import fused_cpu_ops
from reversalkit.train.data import DPOPair, Encoded, collate, encode_dpo, pad_id, plan_run
from reversalkit.train.optim import autocast
from reversalkit.train.parallel import distributed
from reversalkit.train.step import (
    LogFn,
    decoder_hidden,
    lm_head_weight,
    model_device,
    run_steps,
    shared_prompt_hidden,
    supports_shared_prompt,
)


def _pair_batch(encoded: Sequence[tuple[Encoded, Encoded]], idx: Sequence[int], pad: int, device):
    """ids and mask (2B, T): the chosen sequences of the pairs in `idx`, then their rejected ones."""
    seqs = [encoded[i][0] for i in idx] + [encoded[i][1] for i in idx]
    ids, mask = collate(seqs, pad)
    return ids.to(device), mask.to(device)


def _shared_prompt_batch(encoded: Sequence[tuple[Encoded, Encoded]], idx: Sequence[int], pad: int, device):
    """Inputs of `shared_prompt_hidden` for the pairs in `idx`, or None when some pair's chosen and
    rejected sequences do not start with the same prompt (truncation can cut them differently)."""
    pairs = [encoded[i] for i in idx]
    if any(c.prompt_len != r.prompt_len or c.ids[:c.prompt_len] != r.ids[:r.prompt_len] for c, r in pairs):
        return None
    prompts = [c.ids[:c.prompt_len] for c, _ in pairs]
    completions = [c.ids[c.prompt_len:] for c, _ in pairs] + [r.ids[r.prompt_len:] for _, r in pairs]
    width = max(len(x) for x in completions)
    if width == 0:
        return None
    prompt_ids = torch.full((len(pairs), max(map(len, prompts))), pad, dtype=torch.long)  # (B, P)
    completion_ids = torch.full((len(completions), width), pad, dtype=torch.long)  # (2B, C)
    for row, x in enumerate(prompts):
        prompt_ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
    for row, x in enumerate(completions):
        completion_ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
    prompt_lens, completion_lens = (torch.tensor([len(x) for x in xs], dtype=torch.long, device=device)
                                    for xs in (prompts, completions))
    return prompt_ids.to(device), prompt_lens, completion_ids.to(device), completion_lens


def _require_dpo_config(cfg, fn: str) -> None:
    if not isinstance(cfg, DPOTrainConfig):
        raise TypeError(f"{fn} takes a DPOTrainConfig (TrainConfig plus beta, loss_type, label_smoothing, "
                        f"nll_weight, share_prompt), got {type(cfg).__name__}")


def _pair_hidden(model, encoded, idx: Sequence[int], pad: int, device, cfg: DPOTrainConfig):
    """hidden (2B, T, H), input_ids and completion_mask (2B, T) of the pairs in `idx`, chosen rows
    first; with cfg.share_prompt each pair's prompt runs once (`shared_prompt_hidden`)."""
    if cfg.share_prompt:
        longest = max(len(encoded[i][k]) for i in idx for k in (0, 1))
        batch = _shared_prompt_batch(encoded, idx, pad, device)
        if batch is not None and supports_shared_prompt(model, longest):
            return shared_prompt_hidden(model, *batch)
    ids, mask = _pair_batch(encoded, idx, pad, device)
    return decoder_hidden(model, ids), ids, mask


@torch.no_grad()  # a fixed target: never part of the policy's graph
def reference_logprobs(model, tokenizer, pairs: Sequence[DPOPair], cfg: DPOTrainConfig, *,
                       group: Any = None) -> torch.Tensor:
    """Summed completion log-probs (P, 2) float32 on CPU: column 0 chosen, column 1 rejected.

    Runs in eval mode under the same autocast as training, with pairs grouped by length
    (cfg.batch_size pairs per forward) and the same prompt sharing, so that at step 0 the policy
    reproduces these values. With a `group` of several ranks, each runs its share of the same
    batches and the rows are summed over the ranks (each row is set on one rank, zero on the
    others), so the result equals one process's bit for bit.
    """
    from reversalkit.kernels import sequence_logprobs  # lazy: the kernels import triton

    _require_dpo_config(cfg, "reference_logprobs")
    encoded = encode_dpo(tokenizer, pairs, cfg.max_length)
    if not encoded:
        return torch.zeros((0, 2), dtype=torch.float32)
    device, pad = model_device(model), pad_id(tokenizer)
    order = sorted(range(len(encoded)), key=lambda i: -(len(encoded[i][0]) + len(encoded[i][1])))
    out = torch.zeros((len(encoded), 2), dtype=torch.float32)
    was_training = model.training
    model.eval()
    with fused_cpu_ops(model):  # the ops training runs, so that step 0 reproduces these values
        batches = [order[start: start + cfg.batch_size] for start in range(0, len(order), cfg.batch_size)]
        for idx in batches[group.shard(len(batches))] if distributed(group) else batches:
            with autocast(cfg, device):
                hidden, ids, mask = _pair_hidden(model, encoded, idx, pad, device, cfg)
                sums, _ = sequence_logprobs(hidden, lm_head_weight(model), ids, mask,
                                            chunk_size=cfg.logprob_chunk_size)  # (2B,)
            out[idx] = sums.float().cpu().view(2, len(idx)).T
    model.train(was_training)
    if distributed(group):
        group.all_reduce_sum(out)
    return out


def train_dpo(model, tokenizer, pairs: Sequence[DPOPair], ref_logps: torch.Tensor, cfg: DPOTrainConfig, *,
              progress: bool = True, log: LogFn | None = None, group: Any = None) -> TrainResult:
    """Train `model` in place on preference pairs; `ref_logps` (P, 2) from `reference_logprobs`.

    Records per step: loss, chosen/rejected rewards (mean beta * log-ratio), reward accuracy
    (fraction of pairs whose chosen reward beats the rejected one) and the chosen NLL per token.
    With a `group` of several ranks, each runs its slice of every micro-batch
    (`reversalkit.train.parallel`, cfg.data_parallel).
    """
    _require_dpo_config(cfg, "train_dpo")
    if tuple(ref_logps.shape) != (len(pairs), 2):
        raise ValueError(
            f"ref_logps has shape {tuple(ref_logps.shape)} but there are {len(pairs)} pairs; expected "
            f"({len(pairs)}, 2) from reference_logprobs on the same pairs in the same order"
        )
    encoded = encode_dpo(tokenizer, pairs, cfg.max_length)
    steps = plan_run([len(c) + len(r) for c, r in encoded], cfg)
    device, pad = model_device(model), pad_id(tokenizer)
    ref = ref_logps.to(device=device, dtype=torch.float32)

    def step_fn(dp, micro_batches: Sequence[Sequence[int]]) -> dict[str, float]:
        n_pairs = sum(len(mb) for mb in micro_batches)
        n_chosen = sum(len(encoded[i][0]) - encoded[i][0].prompt_len for mb in micro_batches for i in mb)
        stats = dict.fromkeys(("loss", "chosen_rewards", "rejected_rewards", "reward_accuracy", "nll"), 0.0)
        stats["tokens"] = 0
        mine = dp.micro_batches(micro_batches)
        for k, (mb, real) in enumerate(mine):
            out = _micro_step(dp, encoded, ref, mb, pad, n_pairs, n_chosen, cfg, last=k == len(mine) - 1,
                              real=real)
            for key, value in out.items():
                stats[key] += value
        return stats

    return run_steps(model, steps, step_fn, cfg, desc="dpo", progress=progress, log=log, group=group)


def _micro_step(dp, encoded, ref, mb: Sequence[int], pad: int, n_pairs: int, n_chosen: int,
                cfg: DPOTrainConfig, *, last: bool = True, real: bool = True) -> dict[str, float]:
    """Forward + backward of one micro-batch through `dp` (a `DataParallel`), normalised over the
    whole step; returns its stats (zero when not `real`: a stand-in that keeps the ranks in step).

    The fused kernel returns mean_b(dpo) + w * (chosen NLL sum) / (chosen tokens of the micro-batch).
    Scaling it by b / n_pairs and passing w = nll_weight * mb_tokens * n_pairs / (b * n_chosen)
    gives exactly sum_b(dpo) / n_pairs + nll_weight * (chosen NLL sum) / n_chosen, the micro-batch's
    share of the step loss.
    """
    from reversalkit.kernels import linear_dpo_loss  # lazy: the kernels import triton

    device, b = ref.device, len(mb)
    mb_chosen = sum(len(encoded[i][0]) - encoded[i][0].prompt_len for i in mb)
    idx = torch.tensor(mb, device=device)

    def loss_fn(model):
        with autocast(cfg, device):
            hidden, ids, mask = _pair_hidden(model, encoded, mb, pad, device, cfg)  # (2B, T, H), (2B, T) x 2
            return linear_dpo_loss(
                hidden, lm_head_weight(model), ids, mask, ref[idx, 0], ref[idx, 1], beta=cfg.beta,
                loss_type=cfg.loss_type, label_smoothing=cfg.label_smoothing,
                nll_weight=cfg.nll_weight * mb_chosen * n_pairs / (b * n_chosen),
                chunk_size=cfg.logprob_chunk_size,
            )

    out = dp(loss_fn, last=last)
    loss = out.loss * (b / n_pairs if real else 0.0)
    loss.backward()
    if not real:
        return {}
    chosen_r, rejected_r = out.chosen_rewards.float(), out.rejected_rewards.float()
    return {
        "loss": float(loss.detach()),
        "tokens": sum(len(encoded[i][0]) + len(encoded[i][1]) for i in mb),
        "chosen_rewards": float(chosen_r.sum()) / n_pairs,
        "rejected_rewards": float(rejected_r.sum()) / n_pairs,
        "reward_accuracy": float((chosen_r > rejected_r).float().sum()) / n_pairs,
        "nll": float(out.nll) * mb_chosen / n_chosen,
    }
