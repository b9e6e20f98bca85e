"""Argument checks shared by the kernels' public functions, with messages a caller can act on.

check_rows("hidden", x (N, D), targets (N,))      2-D rows and integer targets on one device
check_target_range(targets, V, ignore_index)     ids in [0, V) (CPU only: no CUDA sync)
check_linear(hidden, weight, targets, ignore)    the above plus a (V, H) lm_head beside (N, H)
check_dpo_args(shape, tensors, beta, ...)        loss type, beta, label smoothing, reduction, shapes
"""

from __future__ import annotations

import torch

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


def check_rows(name: str, x: torch.Tensor, targets: torch.Tensor) -> None:
    """(N, D) input and (N,) integer targets on one device."""
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (N, ...), got shape {tuple(x.shape)}")
    if targets.dim() != 1 or targets.shape[0] != x.shape[0]:
        raise ValueError(
            f"targets must have shape ({x.shape[0]},) to match {name}, got {tuple(targets.shape)}"
        )
    if targets.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"targets must be int32 or int64 token ids, got {targets.dtype}")
    if targets.device != x.device:
        raise ValueError(f"targets are on {targets.device} but {name} is on {x.device}")


def check_target_range(targets: torch.Tensor, vocab: int, ignore_index: int) -> None:
    """Out-of-range ids would read outside a row; checked on CPU only (on CUDA it would force a sync)."""
    if targets.is_cuda or targets.numel() == 0:
        return
    valid = targets[targets != ignore_index]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= vocab):
        raise ValueError(
            f"target ids must lie in [0, {vocab}) or equal ignore_index={ignore_index}; got range "
            f"[{int(valid.min())}, {int(valid.max())}]"
        )


def check_linear(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int
) -> None:
    """hidden (N, H), weight (V, H) on hidden's device, targets (N,) ids in [0, V) or ignore_index."""
    check_rows("hidden", hidden, targets)
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"weight must be (V, {hidden.shape[1]}) to match hidden (N, H), got {tuple(weight.shape)}"
        )
    if weight.device != hidden.device:
        raise ValueError(f"weight is on {weight.device} but hidden is on {hidden.device}")
    check_target_range(targets, weight.shape[0], ignore_index)


def check_dpo_args(
    shape_ref: torch.Size,
    tensors: dict[str, torch.Tensor],
    beta: float,
    loss_type: str,
    label_smoothing: float,
    reduction: str,
) -> None:
    """DPO hyper-parameters, and every named tensor 1-D with `shape_ref` (the policy's (B,))."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r} is not one of {LOSS_TYPES}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if loss_type in ("sigmoid", "robust") and not 0.0 <= label_smoothing < 0.5:
        raise ValueError(
            f"label_smoothing must lie in [0, 0.5) for loss_type={loss_type!r}, got {label_smoothing}"
        )
    if loss_type in ("ipo", "hinge") and label_smoothing != 0.0:
        raise ValueError(
            f"label_smoothing applies to 'sigmoid' and 'robust' only; got {label_smoothing} with {loss_type!r}"
        )
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    for name, t in tensors.items():
        if t.dim() != 1 or t.shape != shape_ref:
            raise ValueError(
                f"{name} must be 1-D with shape {tuple(shape_ref)} like policy_chosen_logps, "
                f"got {tuple(t.shape)}"
            )
