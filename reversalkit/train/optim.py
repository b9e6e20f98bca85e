"""Optimizer and learning-rate schedule: AdamW with decay groups, linear warmup, constant or cosine.

The schedule is a pure function of the step index (`lr_at`), set on the optimizer before each
step, so a run's learning rates are easy to test and to log.
"""

from __future__ import annotations

import contextlib
import math

import torch

from reversalkit.train.config import TrainConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Matrices (incl. embeddings) decay; norms and biases do not. Tied weights appear once."""
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # foreach is deterministic and the default on CPU; fused only where it exists (CUDA).
    on_cuda = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
        fused=True if on_cuda else None,
    )


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based) in a run of `total_steps`.

    Warmup rises linearly to cfg.lr at step warmup_steps - 1; cosine then decays to
    lr * min_lr_ratio at the last step.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, total_steps - cfg.warmup_steps - 1)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr_ratio
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when cfg.autocast_bf16 is 'auto' or 'on'; a no-op elsewhere.

    Never on CPU: CPU bf16 matmuls are slower than fp32 on most hosts and would break the
    bit-reproducible fp32 golden trajectories.
    """
    if device.type == "cuda" and cfg.autocast_bf16 in ("auto", "on"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def clip_and_norm(model: torch.nn.Module, max_norm: float | None) -> float:
    """Clip gradients to max_norm (if set) and return the global norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    if hasattr(params[0].grad, "full_tensor"):  # FSDP2's sharded gradients: the norm is a collective
        total = torch.nn.utils.clip_grad_norm_(params, float("inf") if max_norm is None else max_norm)
        return float(total.full_tensor() if hasattr(total, "full_tensor") else total)
    if max_norm is None:
        norms = torch.stack([p.grad.detach().float().norm() for p in params])
        return float(norms.norm())
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
