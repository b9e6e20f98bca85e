"""Fused CPU RMSNorm and SwiGLU for training Llama-family decoders in float32.

Autograd runs HF's RMSNorm as 5 torch ops forward and about 10 backward, and the MLP's
silu(gate) * up as 2 + 4, each a pass over a (tokens, width) tensor. With a small hidden size
those passes cost as much as a good share of the GEMMs. `fused_cpu_ops(model)` points the
forward of each supported RMSNorm and MLP module at one-pass C++ kernels (reversalkit._C,
csrc/train_ops.cpp) for as long as the context lasts and restores them after:

    with fused_cpu_ops(model):
        loss = ...; loss.backward()

Same functions, other rounding: sums run in double, so results differ from HF's by float32
rounding (tests compare both against float64). A call that does not fit (CUDA, not float32, no
extension) runs the module's own forward, so the context is safe around any model.
"""

from __future__ import annotations

import contextlib
import types

import torch

from reversalkit._ext import native

# Module classes whose forward is exactly weight * (x / sqrt(mean(x^2) + eps)) and
# down(silu(gate(x)) * up(x)) (checked against transformers' code by the tests).
RMSNORM_CLASSES = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm"})
MLP_CLASSES = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP"})


def _fits(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and native() is not None


def _addr(t: torch.Tensor) -> int:
    return t.data_ptr()


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        h = x.shape[-1]
        x2 = x.contiguous().view(-1, h)
        w = weight.contiguous()
        y = torch.empty_like(x2)
        rstd = torch.empty(x2.shape[0], dtype=torch.float32)
        native().rms_norm_train_forward_f32(_addr(x2), _addr(w), _addr(y), _addr(rstd), x2.shape[0], h,
                                            float(eps), torch.get_num_threads())
        ctx.save_for_backward(x2, w, rstd)
        ctx.shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, w, rstd = ctx.saved_tensors
        dy2 = dy.contiguous().view(x2.shape)
        dx = torch.empty_like(x2)
        dw = torch.empty_like(w)
        native().rms_norm_train_backward_f32(_addr(dy2), _addr(x2), _addr(w), _addr(rstd), _addr(dx),
                                             _addr(dw), x2.shape[0], x2.shape[1], torch.get_num_threads())
        return dx.view(ctx.shape), dw, None


class SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        g, u = gate.contiguous(), up.contiguous()
        y = torch.empty_like(g)
        native().swiglu_forward_f32(_addr(g), _addr(u), _addr(y), g.numel(), torch.get_num_threads())
        ctx.save_for_backward(g, u)
        return y

    @staticmethod
    def backward(ctx, dy):
        g, u = ctx.saved_tensors
        dy = dy.contiguous()
        dg, du = torch.empty_like(g), torch.empty_like(u)
        native().swiglu_backward_f32(_addr(dy), _addr(g), _addr(u), _addr(dg), _addr(du), g.numel(),
                                     torch.get_num_threads())
        return dg, du


def _require_fit(op: str, *tensors: torch.Tensor) -> None:
    if native() is None:
        raise RuntimeError(f"{op} needs reversalkit._C; reinstall with `pip install -e .` to build it")
    for t in tensors:
        if t.device.type != "cpu" or t.dtype != torch.float32:
            raise ValueError(f"{op} takes float32 CPU tensors, got {t.dtype} on {t.device}; "
                             "use the model's own ops elsewhere (fused_cpu_ops does this itself)")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * x / sqrt(mean(x^2, -1) + eps) for float32 CPU tensors, with gradients for both."""
    _require_fit("rms_norm", x, weight)
    if x.shape[-1:] != weight.shape:
        raise ValueError(f"rms_norm: weight {tuple(weight.shape)} does not match the last dim of x "
                         f"{tuple(x.shape)}")
    return RMSNormFunction.apply(x, weight, eps)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for float32 CPU tensors of one shape, with gradients for both."""
    _require_fit("swiglu", gate, up)
    if gate.shape != up.shape:
        raise ValueError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} differ in shape")
    return SwiGLUFunction.apply(gate, up)


def _rmsnorm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    if _fits(hidden_states, self.weight):
        return rms_norm(hidden_states, self.weight, self.variance_epsilon)
    return type(self).forward(self, hidden_states)


def _mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    gate, up = self.gate_proj(x), self.up_proj(x)  # autocast may make these bf16 from float32 x
    if _fits(gate, up):
        return self.down_proj(swiglu(gate, up))
    return self.down_proj(self.act_fn(gate) * up)


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
