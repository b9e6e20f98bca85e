"""Shared training mechanics: completion log-probs through the fused kernels, and the step loop.

The decoder runs once per micro-batch and hands hidden states + the lm_head weight to
`reversalkit.kernels`, which never materialises the (tokens, vocab) logits. `run_steps` owns what
SFT and DPO have in common: learning-rate schedule, zeroing, clipping, the optimizer step, timing,
progress bar and logging; each trainer supplies only the function that accumulates one step's
gradients.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from reversalkit.train.config import TrainConfig, TrainResult
from reversalkit.train.optim import build_optimizer, clip_and_norm, lr_at, set_lr

StepFn = Callable[[Sequence[Sequence[int]]], dict[str, float]]
LogFn = Callable[[dict[str, float]], None] | logging.Logger


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def lm_head_weight(model) -> torch.Tensor:
    """The (V, H) output projection; refuses heads that are not a plain bias-free linear layer.

    The fused kernels compute logits as hidden @ weight.T, so a bias, logit soft-capping (Gemma 2)
    or logit scaling (Granite, Cohere) would silently give wrong log-probs.
    """
    head = model.get_output_embeddings()
    config = getattr(model, "config", None)
    scaled = any(getattr(config, name, None) not in (None, 1, 1.0)
                 for name in ("final_logit_softcapping", "logits_scaling", "logit_scale"))
    if head is None or getattr(head, "bias", None) is not None or scaled:
        raise ValueError(
            f"{type(model).__name__}: training needs logits = hidden @ lm_head.weight.T (a bias-free linear "
            "head without logit scaling or soft-capping, as in Llama, Mistral and Qwen2); this model's head "
            "cannot go through the fused log-prob kernels"
        )
    return head.weight


def decoder_hidden(model, ids: torch.Tensor) -> torch.Tensor:
    """Last hidden states (B, T, H) of the decoder (after its final norm), without the lm_head."""
    return model.base_model(input_ids=ids, use_cache=False).last_hidden_state


def completion_logps(model, ids: torch.Tensor, mask: torch.Tensor,
                     cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean log-probs of each row's completion tokens: ((B,), (B,)) float32.

    ids: (B, T) right-padded token ids; mask: (B, T) True at completion tokens. Position t predicts
    token t+1 (see `reversalkit.kernels.sequence_logprobs`).
    """
    from reversalkit.kernels import sequence_logprobs  # lazy: the kernels import triton

    hidden = decoder_hidden(model, ids)  # (B, T, H)
    return sequence_logprobs(hidden, lm_head_weight(model), ids, mask, chunk_size=cfg.logprob_chunk_size)


def _emit(log: LogFn | None, record: dict[str, float]) -> None:
    if log is None:
        return
    if isinstance(log, logging.Logger):
        log.info(" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
    else:
        log(record)


def run_steps(model, steps: Sequence[Sequence[Sequence[int]]], step_fn: StepFn, cfg: TrainConfig, *,
              desc: str, progress: bool, log: LogFn | None) -> TrainResult:
    """Run one optimizer step per entry of `steps` ([step][micro-batch][index]).

    `step_fn(micro_batches)` runs forward and backward for every micro-batch of one step (losses
    already normalised over the whole step) and returns that step's statistics: 'loss' and
    'tokens' at least, plus any of 'chosen_rewards', 'rejected_rewards', 'reward_accuracy', 'nll'.
    `log` receives one dict per step (a `logging.Logger` gets one formatted line instead).
    """
    was_training = model.training
    model.train()
    optimizer = build_optimizer(model, cfg)
    result = TrainResult()
    start = time.perf_counter()
    bar = tqdm(total=len(steps), desc=desc, disable=not progress, leave=False)
    for step, micro_batches in enumerate(steps):
        t0 = time.perf_counter()
        lr = lr_at(step, len(steps), cfg)
        set_lr(optimizer, lr)
        optimizer.zero_grad(set_to_none=True)
        stats = step_fn(micro_batches)
        grad_norm = clip_and_norm(model, cfg.max_grad_norm)
        optimizer.step()
        result.losses.append(float(stats["loss"]))
        result.tokens.append(int(stats["tokens"]))
        result.lrs.append(lr)
        result.grad_norms.append(grad_norm)
        result.step_times.append(time.perf_counter() - t0)
        for key in ("chosen_rewards", "rejected_rewards", "reward_accuracy", "nll"):
            if key in stats:
                getattr(result, key).append(float(stats[key]))
        bar.update(1)
        bar.set_postfix(loss=f"{result.losses[-1]:.4f}")
        _emit(log, {"step": step, **stats, "lr": lr, "grad_norm": grad_norm})
    bar.close()
    optimizer.zero_grad(set_to_none=True)
    model.train(was_training)
    result.wall_s = time.perf_counter() - start
    return result
