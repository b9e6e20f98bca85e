"""Fused CPU RMSNorm and SwiGLU for training Llama-family decoders in float32.

Autograd runs HF's RMSNorm as 5 torch ops forward and about 10 backward, and the MLP's
silu(gate) * up as 2 + 4, each a pass over a (tokens, width) tensor. With a small hidden size
those passes cost as much as a good share of the GEMMs. `fused_cpu_ops(model)` runs each
supported RMSNorm and MLP module of `model` through the ops `reversalkit.kernels.rms_norm.rms_norm`
and `reversalkit.kernels.silu_mul.swiglu` for as long as the context lasts:

    with fused_cpu_ops(model):
        loss = ...; loss.backward()

The ops pick their path from the inputs: one-pass C++ kernels (reversalkit._C, csrc/train_ops.cpp)
for float32 CPU tensors, their torch references, which are the modules' own math, otherwise. The
C++ sums run in double, so results differ from HF's by float32 rounding (tests compare both against
float64). Only the module instances of `model` change, each through an instance attribute that the
context removes on exit; their classes, and every other instance, are left as they are.
"""

from __future__ import annotations

import contextlib
import types

import torch

from reversalkit._ext import native
from reversalkit.kernels.rms_norm import rms_norm
from reversalkit.kernels.silu_mul import swiglu

# Module classes whose forward is exactly weight * (x / sqrt(mean(x^2) + eps)) and
# down(silu(gate(x)) * up(x)) (checked against transformers' code by the tests).
RMSNORM_CLASSES = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm"})
MLP_CLASSES = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP"})


def _rmsnorm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    return rms_norm(hidden_states, self.weight, self.variance_epsilon)


def _mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    # autocast may make gate and up bf16 from float32 x: swiglu then takes its torch path
    return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


def _is_silu(module) -> bool:
    """transformers' ACT2FN["silu"] (SiLUActivation, a module whose forward is F.silu) or torch's SiLU."""
    return type(getattr(module, "act_fn", None)).__name__ in ("SiLUActivation", "SiLU")


@contextlib.contextmanager
def fused_cpu_ops(model: torch.nn.Module, enabled: bool = True):
    """Within the context, supported RMSNorm and SiLU-MLP modules of `model` run the fused kernels on
    float32 CPU inputs (see the module docstring). Yields the number of modules switched."""
    switched = []
    if enabled and native() is not None:
        for module in model.modules():
            name = type(module).__name__
            if "forward" in vars(module):  # someone else's override: leave it alone
                continue
            if name in RMSNORM_CLASSES and hasattr(module, "variance_epsilon"):
                module.forward = types.MethodType(_rmsnorm_forward, module)
                switched.append(module)
            elif name in MLP_CLASSES and _is_silu(module):
                module.forward = types.MethodType(_mlp_forward, module)
                switched.append(module)
    try:
        yield len(switched)
    finally:
        for module in switched:
            del module.forward
