"""Shared training mechanics: completion log-probs through the fused kernels, and the step loop.

The decoder runs once per micro-batch and hands hidden states + the lm_head weight to
`reversalkit.kernels`, which never materialises the (tokens, vocab) logits. `run_steps` owns what
SFT and DPO have in common: learning-rate schedule, zeroing, clipping, the optimizer step, timing,
progress bar and logging; each trainer supplies only the function that accumulates one step's
gradients.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from reversalkit.train.config import TrainConfig, TrainResult
from reversalkit.train.cpu_ops import fused_cpu_ops
from reversalkit.train.optim import build_optimizer, clip_and_norm, lr_at, set_lr
from reversalkit.train.parallel import DataParallel

StepFn = Callable[[DataParallel, Sequence[Sequence[int]]], dict[str, float]]
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


def shared_prompt_hidden(model, prompt_ids: torch.Tensor, prompt_lens: torch.Tensor,
                         completion_ids: torch.Tensor, completion_lens: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states of 2B sequences whose rows b and B + b share a prompt, each prompt run once.

    prompt_ids: (B, P) right-padded, prompt_lens: (B,); completion_ids: (2B, C) right-padded,
    completion_lens: (2B,). The prompts go through the decoder once; their K/V, taken twice,
    serve as the past of the 2B completions, which start at position prompt_len. Returns hidden
    (2B, 1 + C, H), input_ids (2B, 1 + C) and completion_mask (2B, 1 + C) in the layout of
    `reversalkit.kernels.sequence_logprobs`: column 0 is the prompt's last token, whose hidden
    state predicts the first completion token. Gradients reach the prompt through both copies.
    """
    b, p = prompt_ids.shape
    c = completion_ids.shape[1]
    dev = prompt_ids.device
    prompt_mask = (torch.arange(p, device=dev)[None] < prompt_lens[:, None]).long()  # (B, P)
    from transformers import DynamicCache  # noqa: PLC0415

    past = DynamicCache()
    cache_arg = {_cache_kwarg(model.base_model): past}
    out = model.base_model(input_ids=prompt_ids, attention_mask=prompt_mask, use_cache=True, **cache_arg)
    if past.get_seq_length() != p:
        raise RuntimeError(f"{type(model).__name__} did not fill the KV cache of the prompts (use_cache "
                           "ignored, e.g. under gradient checkpointing); set share_prompt: false")
    rows = torch.arange(b, device=dev)
    past.batch_select_indices(torch.cat([rows, rows]))  # (2B, ...): row b and B + b hold prompt b
    lens2 = torch.cat([prompt_lens, prompt_lens])  # (2B,)
    completion_mask = torch.arange(c, device=dev)[None] < completion_lens[:, None]  # (2B, C)
    attention = torch.cat([torch.cat([prompt_mask, prompt_mask]), completion_mask.long()], dim=1)
    positions = lens2[:, None] + torch.arange(c, device=dev)[None]  # (2B, C)
    hidden = model.base_model(input_ids=completion_ids, attention_mask=attention, position_ids=positions,
                              use_cache=True, **cache_arg).last_hidden_state  # (2B, C, H)
    last = out.last_hidden_state[rows, prompt_lens - 1]  # (B, H)
    last_ids = prompt_ids[rows, prompt_lens - 1]  # (B,)
    hidden = torch.cat([torch.cat([last, last])[:, None], hidden], dim=1)
    ids = torch.cat([torch.cat([last_ids, last_ids])[:, None], completion_ids], dim=1)
    mask = torch.cat([torch.zeros_like(completion_mask[:, :1]), completion_mask], dim=1)
    return hidden, ids, mask


def _cache_kwarg(decoder) -> str:
    """Name of the decoder's KV-cache argument: `cache` in recent transformers, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def supports_shared_prompt(model, length: int) -> bool:
    """Whether `shared_prompt_hidden` equals a plain forward: every layer attends to all earlier
    tokens of a `length`-token sequence (no sliding window shorter than it), and the model keeps
    a KV cache while training (gradient checkpointing turns it off)."""
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    if checkpointing is None:  # older transformers have only the name that newer ones deprecate
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    if checkpointing:
        return False
    config = getattr(model, "config", None)
    window = getattr(config, "sliding_window", None)
    uses_window = getattr(config, "use_sliding_window", window is not None)
    types = set(getattr(config, "layer_types", None) or ["full_attention"])
    if types - {"full_attention", "sliding_attention"}:
        return False
    return not (uses_window and window is not None and window < length)


def _emit(log: LogFn | None, record: dict[str, float]) -> None:
    if log is None:
        return
    if isinstance(log, logging.Logger):
        log.info(" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
    else:
        log(record)


def run_steps(model, steps: Sequence[Sequence[Sequence[int]]], step_fn: StepFn, cfg: TrainConfig, *,
              desc: str, progress: bool, log: LogFn | None, group: Any = None) -> TrainResult:
    """Run one optimizer step per entry of `steps` ([step][micro-batch][index]).

    `step_fn(dp, micro_batches)` runs forward and backward for this rank's part of every micro-batch
    of one step through `dp` (a `reversalkit.train.parallel.DataParallel`; losses already
    normalised over the whole step) and returns that step's statistics: 'loss' and 'tokens' at
    least, plus any of 'chosen_rewards', 'rejected_rewards', 'reward_accuracy', 'nll'.
    `log` receives one dict per step (a `logging.Logger` gets one formatted line instead).
    group: a `reversalkit.dist.Group` whose ranks share the steps (cfg.data_parallel says how);
    the statistics are summed over the ranks.
    """
    was_training = model.training
    model.train()
    dp = DataParallel(model, cfg.data_parallel, group)
    optimizer = build_optimizer(dp.module, cfg)
    result = TrainResult()
    start = time.perf_counter()
    bar = tqdm(total=len(steps), desc=desc, disable=not progress, leave=False)
    # one-pass RMSNorm / SwiGLU on float32 CPU; not under FSDP, which frees and refills the storage
    # of gathered weights, and the C++ entries' numpy views of a weight make its storage fixed-size
    with fused_cpu_ops(dp.module, enabled=dp.mode != "fsdp"):
        for step, micro_batches in enumerate(steps):
            t0 = time.perf_counter()
            lr = lr_at(step, len(steps), cfg)
            set_lr(optimizer, lr)
            optimizer.zero_grad(set_to_none=True)
            stats = dp.reduce_stats(step_fn(dp, micro_batches))
            grad_norm = clip_and_norm(dp.module, cfg.max_grad_norm)
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
    optimizer.zero_grad(set_to_none=True)
    del optimizer
    dp.finish()
    bar.close()
    model.train(was_training)
    result.wall_s = time.perf_counter() - start
    return result
