"""SFT and DPO training on top of `reversalkit.kernels`.

    from reversalkit.train import (DPOPair, DPOTrainConfig, SFTExample, TrainConfig, reference_logprobs,
                                   train_dpo, train_sft)
    train_sft(model, tok, [SFTExample(prompt, solution)], TrainConfig(lr=1e-3, epochs=3))
    cfg = DPOTrainConfig(lr=5e-7, beta=0.1)
    ref = reference_logprobs(model, tok, pairs, cfg)        # (P, 2), cached by the study
    train_dpo(model, tok, pairs, ref, cfg)

Modules: `config` (TrainConfig, DPOTrainConfig, TrainResult), `data` (examples, tokenization,
length-bucketed step plans), `optim` (AdamW, schedule, clipping, autocast), `step` (log-probs via the
kernels, the step loop), `cpu_ops` (one-pass RMSNorm / SwiGLU for float32 CPU training), `sft`, `dpo`.
"""

from reversalkit.train.config import DPOTrainConfig, TrainConfig, TrainResult
from reversalkit.train.data import DPOPair, SFTExample
from reversalkit.train.dpo import reference_logprobs, train_dpo
from reversalkit.train.sft import train_sft

__all__ = [
    "DPOPair",
    "DPOTrainConfig",
    "SFTExample",
    "TrainConfig",
    "TrainResult",
    "reference_logprobs",
    "train_dpo",
    "train_sft",
]
