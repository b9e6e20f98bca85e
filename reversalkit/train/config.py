"""Training configuration: `TrainConfig` (optimiser and batching, shared by SFT and DPO),
`DPOTrainConfig` (adds the DPO loss), and the per-run record (`TrainResult`).

One optimizer step consumes `batch_size * grad_accum` sequences (DPO: pairs); the loss of a step is
normalised over that whole step, so the split into micro-batches never changes the update.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from reversalkit.config import Config, check, option
from reversalkit.kernels import LOSS_TYPES
from reversalkit.train.parallel import DATA_PARALLEL

SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass
class TrainConfig(Config):
    """Optimiser and batching settings of `train_sft` (and, through `DPOTrainConfig`, of DPO)."""

    lr: float = option(1e-5, "peak learning rate of AdamW (after warmup)")
    weight_decay: float = option(0.0, "AdamW decoupled weight decay; not applied to norms and biases")
    betas: tuple[float, float] = option((0.9, 0.999), "AdamW betas (beta1, beta2)")
    eps: float = option(1e-8, "AdamW epsilon")
    warmup_steps: int = option(0, "optimizer steps of linear warmup from 0 to lr")
    schedule: str = option("constant", "learning-rate schedule after warmup: 'constant' or 'cosine'")
    min_lr_ratio: float = option(0.0, "cosine schedule: final lr as a fraction of lr")
    epochs: int = option(1, "passes over the training data")
    max_steps: int | None = option(None, "cap on optimizer steps (the schedule spans the capped run)")
    batch_size: int = option(8, "sequences (DPO: pairs) per micro-batch, i.e. per forward pass")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    max_grad_norm: float | None = option(1.0, "clip the global gradient norm to this; null disables clipping")
    max_length: int = option(512, "max tokens of prompt + completion; longer prompts lose their start, "
                                  "then completions their end")
    seed: int = option(0, "seed of the data order (training is bit-reproducible on CPU for a fixed seed)")
    shuffle: bool = option(True, "shuffle the examples every epoch")
    length_bucketing: bool = option(True, "put sequences of similar length in the same step (less padding)")
    bucket_window: int = option(16, "length bucketing: sort within windows of this many optimizer steps")
    autocast_bf16: str | bool = option("auto", "bf16 autocast: 'auto' (on for CUDA), 'on', 'off'; CPU: never")
    logprob_chunk_size: int | None = option(None, "token rows per chunk of the fused log-prob kernels; "
                                                  "null = the kernels' memory-based default")
    drop_last: bool = option(False, "drop the last optimizer step of an epoch when it is not full")
    data_parallel: str = option("ddp", "under torchrun: 'ddp' (each rank a full replica, gradients "
                                       "summed) or 'fsdp' (FSDP2: weights, gradients and optimizer state "
                                       "sharded)")

    def __post_init__(self) -> None:
        if isinstance(self.autocast_bf16, bool):  # YAML reads on/off as booleans
            self.autocast_bf16 = "on" if self.autocast_bf16 else "off"
        self.betas = tuple(float(b) for b in self.betas)
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
              f"betas must be two numbers in [0, 1), got {self.betas}")
        check(self.eps > 0, f"eps must be > 0, got {self.eps}")
        check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        check(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        check(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        check(self.max_steps is None or self.max_steps >= 1,
              f"max_steps must be >= 1 or null, got {self.max_steps}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}")
        check(self.max_grad_norm is None or self.max_grad_norm > 0,
              f"max_grad_norm must be > 0 or null (no clipping), got {self.max_grad_norm}")
        check(self.max_length >= 2, f"max_length must be >= 2, got {self.max_length}")
        check(self.bucket_window >= 1, f"bucket_window must be >= 1, got {self.bucket_window}")
        check(self.autocast_bf16 in ("auto", "on", "off"),
              f"autocast_bf16 must be 'auto', 'on' or 'off', got {self.autocast_bf16!r}")
        check(self.data_parallel in DATA_PARALLEL,
              f"data_parallel must be one of {DATA_PARALLEL}, got {self.data_parallel!r}")
        check(self.logprob_chunk_size is None or self.logprob_chunk_size >= 1,
              f"logprob_chunk_size must be >= 1 or null, got {self.logprob_chunk_size}")

    @property
    def step_size(self) -> int:
        """Sequences (DPO: pairs) per optimizer step."""
        return self.batch_size * self.grad_accum


@dataclasses.dataclass
class DPOTrainConfig(TrainConfig):
    """`TrainConfig` plus the DPO loss: settings of `train_dpo` / `reference_logprobs`."""

    beta: float = option(0.1, "strength of the KL constraint to the reference")
    loss_type: str = option("sigmoid", "loss: 'sigmoid', 'ipo', 'hinge' or 'robust'")
    label_smoothing: float = option(0.0, "'sigmoid'/'robust' loss: assumed probability that a preference "
                                         "label is flipped")
    nll_weight: float = option(0.0, "weight of the chosen completions' NLL per token added to the loss")
    share_prompt: bool = option(True, "run the prompt of a pair once for its chosen and rejected "
                                      "completions (same values up to rounding, fewer FLOPs)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, f"beta must be > 0, got {self.beta}")
        check(self.loss_type in LOSS_TYPES, f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        check(0 <= self.label_smoothing < 0.5,
              f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        check(self.label_smoothing == 0 or self.loss_type in ("sigmoid", "robust"),
              f"label_smoothing applies to loss_type 'sigmoid' and 'robust' only, got {self.loss_type!r}")
        check(self.nll_weight >= 0, f"nll_weight must be >= 0, got {self.nll_weight}")


@dataclasses.dataclass
class TrainResult:
    """Per-optimizer-step record of one training run; lists are indexed by step.

    `loss` is the objective that was minimised (DPO: including the NLL term); `tokens` counts the
    non-padding tokens that went through the model in the step. The DPO lists (`chosen_rewards`,
    `rejected_rewards` = beta * log-ratio means, `reward_accuracy`, `nll`) stay empty for SFT.
    """

    losses: list[float] = dataclasses.field(default_factory=list)
    lrs: list[float] = dataclasses.field(default_factory=list)
    grad_norms: list[float] = dataclasses.field(default_factory=list)
    tokens: list[int] = dataclasses.field(default_factory=list)
    step_times: list[float] = dataclasses.field(default_factory=list)
    chosen_rewards: list[float] = dataclasses.field(default_factory=list)
    rejected_rewards: list[float] = dataclasses.field(default_factory=list)
    reward_accuracy: list[float] = dataclasses.field(default_factory=list)
    nll: list[float] = dataclasses.field(default_factory=list)
    wall_s: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.losses)

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["steps"] = self.steps
        out["tokens_per_s"] = self.total_tokens / self.wall_s if self.wall_s > 0 else 0.0
        return out
