"""Data-parallel training: the ranks of a torchrun job share every optimizer step.

The step plan (`plan_run`) is the same on every rank and does not depend on the world size. Rank r
runs, of each micro-batch of a step, its contiguous slice (`Group.shard`), with the loss already
normalised over the whole global step, so the ranks' gradients *summed* are the gradient of the
single-process step, up to float rounding (the sums are grouped differently). Two ways to sum
them, `TrainConfig.data_parallel`:
- "ddp": torch's DistributedDataParallel. Every rank holds the whole model and its optimizer
  state; the gradients are summed over the ranks in buckets during the last micro-batch's backward.
- "fsdp": FSDP2 (`torch.distributed.fsdp.fully_shard`) on each decoder layer and on the root.
  Parameters, gradients and AdamW state are sharded over the ranks; a layer's weights are gathered
  for its forward and its backward, and its gradients reduce-scattered (summed). For models whose
  training state does not fit one device. The ranks train a sharded copy and gather its full
  weights back into the caller's model at the end, so the caller sees the same in-place update in
  every mode (while training, a rank holds the full weights once more beside its shards).

The fused kernels read the decoder and `lm_head.weight` outside `model.forward`; `StepModule` runs
one micro-batch's whole loss inside one forward, where DDP's and FSDP's hooks see every use of a
parameter. Those hooks need every rank to run the same forwards in a step, so a rank whose slice
of a micro-batch is empty runs one example of it with its loss multiplied by 0.

`group` is a `reversalkit.dist.Group` (rank, world, shard, all_reduce_sum, broadcast_tensor) or
None for one process.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

DATA_PARALLEL = ("ddp", "fsdp")


def distributed(group: Any) -> bool:
    return group is not None and group.world > 1


def local_micro_batches(micro_batches: Sequence[Sequence[int]], group: Any) -> list[tuple[list[int], bool]]:
    """(this rank's slice, real) per micro-batch of a step; an empty slice becomes the micro-batch's
    first example with real=False, whose loss the caller multiplies by 0."""
    if not distributed(group):
        return [(list(mb), True) for mb in micro_batches]
    out = []
    for mb in micro_batches:
        part = list(mb)[group.shard(len(mb))]
        out.append((part, True) if part else ([mb[0]], False))
    return out


class StepModule(torch.nn.Module):
    """The root module of a training step: forward(loss_fn, *args) = loss_fn(model, *args)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, loss_fn: Callable[..., Any], *args: Any) -> Any:
        return loss_fn(self.model, *args)


def broadcast_parameters(model: torch.nn.Module, group: Any) -> None:
    """Rank 0's weights into every rank's model."""
    if not distributed(group):
        return
    with torch.no_grad():
        for p in model.parameters():
            group.broadcast_tensor(p.data)


def _sum_hook(group, bucket):  # unannotated: DDP checks a hook's annotations, which are strings here
    """DDP communication hook: the bucket's gradients summed over the ranks (DDP's own averages).
    The seconds from the call until the sum is there go to group.comm_seconds."""
    start = time.perf_counter()
    fut = torch.distributed.all_reduce(bucket.buffer(), async_op=True).get_future()

    def done(f):
        group.comm_seconds += time.perf_counter() - start
        return f.value()[0]

    return fut.then(done)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a transformers causal LM (`model.base_model.layers`), or none."""
    layers = getattr(getattr(model, "base_model", model), "layers", None)
    return list(layers) if isinstance(layers, torch.nn.ModuleList) else []


def _fully_shard(model: torch.nn.Module, device: torch.device) -> StepModule:
    from torch.distributed.fsdp import FSDPModule, fully_shard  # noqa: PLC0415

    for layer in decoder_layers(model):
        fully_shard(layer)
    root = fully_shard(StepModule(model))
    gloo = device.type == "cpu"
    for module in root.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)  # sum: each rank's loss is already its share of the step
            if gloo:  # gloo has no pre-multiplied sum; a plain sum with factor 1 is the same
                module.set_force_sum_reduction_for_comms(True)
    return root


class DataParallel:
    """One rank's side of training shared with the others (see the module docstring); with one
    process, the model itself.

        dp = DataParallel(model, cfg, group)
        optimizer = build_optimizer(dp.module, cfg)          # dp.module: what the optimizer steps
        for mb, real in dp.micro_batches(step):
            loss = dp(loss_fn, *inputs, last=...) * (1.0 if real else 0.0); loss.backward()
        stats = dp.reduce_stats(stats); optimizer.step()
        dp.finish()                                         # fsdp: full weights back into `model`
    """

    def __init__(self, model: torch.nn.Module, mode: str, group: Any = None):
        if mode not in DATA_PARALLEL:
            raise ValueError(f"data_parallel must be one of {DATA_PARALLEL}, got {mode!r}")
        self.model, self.module, self.group = model, model, group if distributed(group) else None
        self.mode = mode if self.group is not None else "single"
        device = next(model.parameters()).device
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

            # DDP copies rank 0's parameters and buffers to every rank when it wraps the model
            ids = [device] if device.type == "cuda" else None
            self.root = DistributedDataParallel(StepModule(model), device_ids=ids, broadcast_buffers=False)
            self.root.register_comm_hook(self.group, _sum_hook)
        elif self.mode == "fsdp":
            broadcast_parameters(model, self.group)
            self.module = copy.deepcopy(model)
            self.root = _fully_shard(self.module, device)
        else:
            self.root = StepModule(model)

    def micro_batches(self, micro_batches: Sequence[Sequence[int]]) -> list[tuple[list[int], bool]]:
        return local_micro_batches(micro_batches, self.group)

    def __call__(self, loss_fn: Callable[..., Any], *args: Any, last: bool = True) -> Any:
        """loss_fn(model, *args) in the root's forward. last: whether the backward of this forward
        ends the step (gradients are summed over the ranks then; before it they accumulate)."""
        if self.mode == "ddp":
            self.root.require_backward_grad_sync = last
        elif self.mode == "fsdp":
            self.root.set_requires_gradient_sync(last)
        return self.root(loss_fn, *args)

    def reduce_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """A step's statistics summed over the ranks."""
        if self.group is None:
            return stats
        keys = sorted(stats)
        values = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64)
        self.group.all_reduce_sum(values)
        out = dict(zip(keys, values.tolist()))
        if "tokens" in out:
            out["tokens"] = int(round(out["tokens"]))
        return out

    def finish(self) -> None:
        """After the last step: fsdp gathers the trained weights into the caller's model on every rank."""
        if self.mode == "fsdp":
            from torch.distributed.checkpoint.state_dict import (  # noqa: PLC0415
                StateDictOptions,
                get_model_state_dict,
            )

            full = get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True))
            self.model.load_state_dict(full)
        self.root = self.module = None
