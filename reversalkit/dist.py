"""The process group of a study: one process, or one rank of a `torchrun` job.

`process_group(device)` joins the group that torchrun describes in the environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT): backend gloo on the CPU, nccl on CUDA with one device
per rank (cuda:LOCAL_RANK). Without those variables, or with WORLD_SIZE=1, it returns a group of
one whose collectives return their input, so the study runs the same code either way.

    group = process_group("cpu")
    mine = problems[group.shard(len(problems))]          # a contiguous slice, in problem order
    everything = group.gather(records_of(mine))          # rank 0: the lists in rank order; others: None
    done = group.broadcast(store.is_done(step))          # rank 0 decides, every rank follows

Collectives move picklable Python objects (gloo or nccl underneath); tensors of gradients go
through `all_reduce_sum`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as tdist


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer; launch with torchrun "
                         "or unset it") from None


class Group:
    """Rank `rank` of `world` processes (see module doc). `device` is this rank's device."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0, device: str = "cpu"):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world} processes")
        self.rank, self.world, self.local_rank, self.device = rank, world, local_rank, device
        # Seconds this rank spent inside collectives (transfer plus waiting for slower ranks).
        self.comm_seconds = 0.0

    @contextlib.contextmanager
    def _timed(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.comm_seconds += time.perf_counter() - t0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def __repr__(self) -> str:
        return f"Group(rank={self.rank}, world={self.world}, device={self.device!r})"

    # ---- sharding --------------------------------------------------------------------------
    def shard(self, n: int, rank: int | None = None) -> slice:
        """This rank's contiguous slice of n items: the first n % world ranks take one more, so the
        slices of ranks 0..world-1, concatenated, are the items in order."""
        r = self.rank if rank is None else rank
        base, extra = divmod(n, self.world)
        start = r * base + min(r, extra)
        return slice(start, start + base + (1 if r < extra else 0))

    # ---- collectives -----------------------------------------------------------------------
    def barrier(self) -> None:
        if self.distributed:
            with self._timed():
                tdist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        with self._timed():
            tdist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Rank 0: every rank's `obj`, in rank order; other ranks: None."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world if self.is_main else None
        with self._timed():
            tdist.gather_object(obj, out, dst=0)
        return out

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        with self._timed():
            tdist.all_gather_object(out, obj)
        return out

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the ranks, in place; returns it."""
        if self.distributed:
            with self._timed():
                tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
        return tensor

    def broadcast_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's values in `tensor` on every rank, in place; returns it."""
        if self.distributed:
            with self._timed():
                tdist.broadcast(tensor, src=0)
        return tensor

    def agree(self, ok: bool) -> bool:
        """True on every rank when `ok` holds on every rank (a rank that failed tells the others)."""
        if not self.distributed:
            return ok
        flag = torch.tensor([0 if ok else 1], dtype=torch.int64)
        with self._timed():
            tdist.all_reduce(flag, op=tdist.ReduceOp.SUM)
        return int(flag.item()) == 0


SINGLE = Group()


def rank_from_env() -> int:
    """This process's global rank as torchrun set it (0 outside torchrun)."""
    return _env_int("RANK", 0)


def launched_by_torchrun() -> bool:
    return _env_int("WORLD_SIZE", 1) > 1


def process_group(device: str = "cpu", *, timeout_s: float | None = None) -> Group:
    """Join torchrun's group (initialised once per process) or return a group of one.

    device: the study's device; "cuda" becomes cuda:LOCAL_RANK, and the backend follows it
    (nccl for CUDA, gloo otherwise). timeout_s: how long a collective waits for a rank that
    stopped answering before the job fails (torch's default when None).
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Group(device=device)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    cuda = device.startswith("cuda")
    if cuda:
        if torch.cuda.device_count() <= local:
            raise ValueError(f"rank {rank} wants cuda:{local} but this node has {torch.cuda.device_count()} "
                             "GPU(s); launch at most that many processes per node")
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not tdist.is_initialized():
        kwargs: dict[str, Any] = {"backend": "nccl" if cuda else "gloo"}
        if timeout_s is not None:
            kwargs["timeout"] = datetime.timedelta(seconds=timeout_s)
        tdist.init_process_group(**kwargs)
    if tdist.get_world_size() != world or tdist.get_rank() != rank:
        raise RuntimeError(f"process group has rank {tdist.get_rank()} of {tdist.get_world_size()}, "
                           f"the environment says {rank} of {world}")
    return Group(rank, world, local, device)


def close() -> None:
    """Leave the process group (no-op when none was joined)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
