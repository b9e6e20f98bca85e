"""Data-parallel training steps: each rank takes its slice of every global micro-batch.

The step plan (`plan_run`) is the same on every rank and does not depend on the world size. Rank r
runs, of each micro-batch of a step, its contiguous slice (`Group.shard`), with the loss already
normalised over the whole global step; summing the ranks' gradients (`reduce_step`) then gives the
gradient of the single-process step, up to float rounding (the sums are grouped differently).
That is DDP's reduction, done once per optimizer step: the fused kernels call the decoder and the
lm_head weight outside `module.forward`, where DDP's hooks would need them, and a rank can hold no
example of a short last step. Every rank then clips and steps the same gradients, so the replicas
stay equal; `broadcast_parameters` makes them equal at the start.

`group` is a `reversalkit.dist.Group` (rank, world, shard, all_reduce_sum, broadcast_tensor) or
None for one process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

# Elements per all-reduce (DDP's default bucket is 25 MB; 8M float32 = 32 MB).
BUCKET_NUMEL = 8 * 1024 * 1024


def distributed(group: Any) -> bool:
    return group is not None and group.world > 1


def local_micro_batches(micro_batches: Sequence[Sequence[int]], group: Any) -> list[Sequence[int]]:
    """This rank's slice of each micro-batch of a step (empty slices dropped)."""
    if not distributed(group):
        return list(micro_batches)
    out = []
    for mb in micro_batches:
        part = list(mb)[group.shard(len(mb))]
        if part:
            out.append(part)
    return out


def _params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def broadcast_parameters(model: torch.nn.Module, group: Any) -> None:
    """Rank 0's weights into every rank's model (as DDP does when it wraps a model)."""
    if not distributed(group):
        return
    with torch.no_grad():
        for p in model.parameters():
            group.broadcast_tensor(p.data)


def reduce_step(model: torch.nn.Module, stats: dict[str, float], group: Any) -> dict[str, float]:
    """Sum gradients and step statistics over the ranks; returns the summed statistics.

    A parameter without a gradient on every rank keeps None (the optimizer then skips it, as it
    would in one process); one with a gradient on some rank gets the sum, zeros standing in for
    the ranks that had none.
    """
    if not distributed(group):
        return stats
    params = _params(model)
    keys = sorted(stats)
    head = torch.tensor([float(stats[k]) for k in keys] + [float(p.grad is not None) for p in params],
                        dtype=torch.float64)
    group.all_reduce_sum(head)
    has = head[len(keys):] > 0
    live = [p for p, h in zip(params, has.tolist()) if h]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for bucket in _buckets(live):
        flat = torch.cat([p.grad.reshape(-1) for p in bucket])
        group.all_reduce_sum(flat)
        offset = 0
        for p in bucket:
            n = p.grad.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n
    out = {k: head[i].item() for i, k in enumerate(keys)}
    if "tokens" in out:
        out["tokens"] = int(round(out["tokens"]))
    return out


def _buckets(params: list[torch.nn.Parameter]) -> list[list[torch.nn.Parameter]]:
    """Parameters in order, cut into runs of one gradient dtype and at most BUCKET_NUMEL elements."""
    out: list[list[torch.nn.Parameter]] = []
    size = 0
    for p in params:
        if not out or size + p.numel() > BUCKET_NUMEL or out[-1][0].grad.dtype != p.grad.dtype:
            out.append([])
            size = 0
        out[-1].append(p)
        size += p.numel()
    return out
