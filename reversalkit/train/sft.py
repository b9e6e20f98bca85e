"""Supervised fine-tuning: masked NLL over completion tokens, normalised per optimizer step.

The loss of a step is (sum of -log p over every completion token of the step) / (number of those
tokens). Each micro-batch contributes its own sum divided by the step's total, so gradient
accumulation gives the same update as one large batch. The lm_head + NLL run through
`reversalkit.kernels.linear_nll_loss`, which computes their gradients during the forward pass
(3 GEMMs instead of 4) without materialising the logits.

    result = train_sft(model, tokenizer, [SFTExample(prompt, solution), ...], TrainConfig(lr=1e-3))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reversalkit.train.config import TrainConfig, TrainResult
from reversalkit.train.data import SFTExample, collate, encode_sft, pad_id, plan_run
from reversalkit.train.optim import autocast
from reversalkit.train.step import LogFn, decoder_hidden, lm_head_weight, model_device, run_steps


def train_sft(model, tokenizer, examples: Sequence[SFTExample], cfg: TrainConfig, *,
              progress: bool = True, log: LogFn | None = None, group: Any = None) -> TrainResult:
    """Fine-tune `model` in place on `examples`; returns the per-step record.

    The loss covers completion + eos only. Steps, micro-batches and order follow `plan_run`
    (seeded by cfg.seed, length-bucketed if enabled). With a `group` of several ranks, each runs
    its slice of every micro-batch (`reversalkit.train.parallel`, cfg.data_parallel).
    """
    from reversalkit.kernels import linear_nll_loss  # lazy: the kernels import triton
    from reversalkit.kernels.sequence import shifted_rows

    encoded = encode_sft(tokenizer, examples, cfg.max_length)
    steps = plan_run([len(e) for e in encoded], cfg)
    device = model_device(model)
    pad = pad_id(tokenizer)

    def loss_fn(model, ids, mask):  # summed NLL of one micro-batch's completion tokens
        with autocast(cfg, device):
            hidden = decoder_hidden(model, ids)  # (B, T, H)
            rows, targets, _, _ = shifted_rows(hidden, ids, mask)  # (N, H), (N,)
            return linear_nll_loss(rows, lm_head_weight(model), targets, reduction="sum",
                                   chunk_size=cfg.logprob_chunk_size)

    def step_fn(dp, micro_batches: Sequence[Sequence[int]]) -> dict[str, float]:
        denom = sum(len(encoded[i]) - encoded[i].prompt_len for mb in micro_batches for i in mb)
        loss_sum, tokens = 0.0, 0
        mine = dp.micro_batches(micro_batches)
        for k, (mb, real) in enumerate(mine):
            ids, mask = collate([encoded[i] for i in mb], pad)
            loss = dp(loss_fn, ids.to(device), mask.to(device), last=k == len(mine) - 1) / denom
            if not real:  # this rank's slice is empty: the forward keeps the ranks in step
                loss = loss * 0.0
            loss.backward()
            if real:
                loss_sum += float(loss.detach())
                tokens += sum(len(encoded[i]) for i in mb)
        return {"loss": loss_sum, "tokens": tokens}

    return run_steps(model, steps, step_fn, cfg, desc="sft", progress=progress, log=log, group=group)
