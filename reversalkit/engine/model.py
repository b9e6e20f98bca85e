"""Llama-family forward pass for the sampler, on weights taken from a Hugging Face model.

Supports LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM: RoPE (default, linear and
llama3 scaling), grouped-query attention, RMSNorm, SwiGLU, tied embeddings, Qwen2's q/k/v biases,
Mistral's (and Qwen2's per-layer) sliding window. The math follows the Hugging Face modules op for
op, so greedy decoding gives the same tokens; q/k/v and gate/up projections are fused into one
matrix each. The model knows nothing about paging: `hidden_states` calls `attend(layer, q, k, v)`
and the runner decides where K/V live and how attention reads them.

    model = LlamaFamilyModel.from_hf(hf_model, device="cpu", dtype=torch.float32)
    x = model.hidden_states(input_ids, positions, attend)    # (T,) -> (T, hidden)
    logits = model.logits(x)                                 # (T, V)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from reversalkit.kernels.rms_norm import add_rms_norm
from reversalkit.kernels.rope import rope_fn
from reversalkit.kernels.silu_mul import silu_mul

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
_DYNAMIC_ROPE = ("dynamic", "longrope")  # frequencies that change with the sequence length


def _rope_params(config) -> dict:
    """RoPE settings from either transformers' `rope_parameters` or the older theta/scaling fields."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    if "rope_theta" not in params:
        params["rope_theta"] = getattr(config, "rope_theta", 10000.0)
    scaling = getattr(config, "rope_scaling", None)
    if scaling and "rope_type" not in params:
        params.update(scaling)
    params["rope_type"] = params.get("rope_type", params.get("type", "default")) or "default"
    return params


def rope_inv_freq(config, head_dim: int) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (head_dim // 2,) float32 and the cos/sin scale, as transformers computes them."""
    p = _rope_params(config)
    kind = p["rope_type"]
    base = float(p["rope_theta"])
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if kind == "default":
        return inv_freq, 1.0
    if kind == "linear":
        return inv_freq / float(p["factor"]), 1.0
    if kind == "llama3":
        factor, low, high = float(p["factor"]), float(p["low_freq_factor"]), float(p["high_freq_factor"])
        old_len = p["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, scaled), 1.0
    raise ValueError(
        f"RoPE type {kind!r} is not supported by the sampler (supported: default, linear, llama3, and "
        f"other static types when a transformers model provides its table; not {', '.join(_DYNAMIC_ROPE)}, "
        "whose frequencies change with the sequence length)")


@dataclasses.dataclass
class ModelSpec:
    """Shape and options of a Llama-family model, read from a transformers config."""

    architecture: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_eps: float
    max_position: int
    tie_embeddings: bool
    windows: tuple[int | None, ...]  # sliding window per layer (None = full attention)

    @classmethod
    def from_config(cls, config) -> ModelSpec:
        archs = list(getattr(config, "architectures", None) or [])
        arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
        if arch is None:
            by_type = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                       "qwen2": "Qwen2ForCausalLM"}
            arch = by_type.get(getattr(config, "model_type", ""))
        if arch is None:
            raise ValueError(
                f"unsupported architecture {archs or getattr(config, 'model_type', '?')}: the sampler runs "
                f"{', '.join(SUPPORTED_ARCHITECTURES)}; sample other models with transformers' generate")
        act = getattr(config, "hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ValueError(f"unsupported activation {act!r}: the sampler implements SwiGLU (silu)")
        heads = config.num_attention_heads
        layers = config.num_hidden_layers
        window = getattr(config, "sliding_window", None)
        types = getattr(config, "layer_types", None)
        if types is not None:
            windows = tuple(window if t == "sliding_attention" else None for t in types)
        elif arch == "MistralForCausalLM":
            windows = (window,) * layers
        else:
            windows = (None,) * layers
        return cls(
            architecture=arch, vocab_size=config.vocab_size, hidden_size=config.hidden_size,
            num_layers=layers, num_heads=heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            rms_eps=config.rms_norm_eps, max_position=config.max_position_embeddings,
            tie_embeddings=bool(getattr(config, "tie_word_embeddings", False)), windows=windows,
        )


@dataclasses.dataclass
class LayerWeights:
    ln1: torch.Tensor  # (hidden,)
    wqkv: torch.Tensor  # ((H + 2 * Hkv) * D, hidden)
    bqkv: torch.Tensor | None
    wo: torch.Tensor  # (hidden, H * D)
    bo: torch.Tensor | None
    ln2: torch.Tensor
    wgu: torch.Tensor  # (2 * intermediate, hidden)
    bgu: torch.Tensor | None
    wd: torch.Tensor  # (hidden, intermediate)
    bd: torch.Tensor | None


def _strip(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept `model.layers...` (causal LM) and `layers...` (base model) key styles."""
    out = {}
    for k, v in state_dict.items():
        out[k[len("model."):] if k.startswith("model.") else k] = v
    return out


class LlamaFamilyModel:
    """Weights in fused layouts plus the forward math; see the module docstring."""

    def __init__(self, spec: ModelSpec, inv_freq: torch.Tensor, rope_scale: float, *,
                 device: torch.device, dtype: torch.dtype):
        self.spec, self.device, self.dtype = spec, torch.device(device), dtype
        self.scale = spec.head_dim ** -0.5
        pos = torch.arange(spec.max_position, dtype=torch.float32)[:, None] * inv_freq.float()[None]
        emb = torch.cat([pos, pos], dim=-1)  # (P, D)
        half = spec.head_dim // 2
        sin = emb.sin() * rope_scale
        # rotate_half(x) * sin == roll(x, D/2) * [-sin_1, sin_2]: one roll instead of slices + cat.
        self.cos = (emb.cos() * rope_scale).to(device=self.device, dtype=dtype)
        self.sin_signed = torch.cat([-sin[:, :half], sin[:, half:]], -1).to(device=self.device, dtype=dtype)
        self.layers: list[LayerWeights] = []
        self.embed = self.norm = self.lm_head = None
        # RMSNorm, RoPE and SiLU-mul run through reversalkit.kernels, whose dispatch picks Triton on
        # CUDA, reversalkit._C for float32 on the CPU where it is bitwise torch's, torch otherwise;
        # "triton" | "cpp" | "torch" forces one path (tests run the CUDA path on the CPU).
        self.ops_backend = "auto"

    @classmethod
    def from_hf(cls, hf_model, *, device=None, dtype=None) -> LlamaFamilyModel:
        """Copy the weights of a transformers Llama/Mistral/Qwen2 causal LM."""
        config = hf_model.config
        spec = ModelSpec.from_config(config)
        rotary = getattr(getattr(hf_model, "model", None), "rotary_emb", None)
        kind = _rope_params(config)["rope_type"]
        if rotary is not None and hasattr(rotary, "original_inv_freq") and kind not in _DYNAMIC_ROPE:
            # transformers' own table (any static RoPE type): identical whatever its version computes.
            inv_freq, scale = rotary.original_inv_freq.float().cpu(), float(rotary.attention_scaling)
        else:
            inv_freq, scale = rope_inv_freq(config, spec.head_dim)
        p = next(hf_model.parameters())
        device = torch.device(device) if device is not None else p.device
        model = cls(spec, inv_freq, scale, device=device, dtype=dtype or p.dtype)
        model.load_weights(hf_model.state_dict(), strict=True)
        return model

    @torch.inference_mode()
    def load_weights(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Replace every weight (fusing q/k/v and gate/up) from a transformers-style state dict."""
        sd = _strip(state_dict)
        s = self.spec

        def get(name: str, required: bool = True) -> torch.Tensor | None:
            t = sd.get(name)
            if t is None and required:
                raise KeyError(f"state dict lacks {name!r} (keys look like {sorted(sd)[:3]}...)")
            return None if t is None else t.detach().to(device=self.device, dtype=self.dtype)

        def cat(names: list[str], required: bool = True) -> torch.Tensor | None:
            parts = [get(n, required) for n in names]
            return None if any(p is None for p in parts) else torch.cat(parts, 0).contiguous()

        layers = []
        for i in range(s.num_layers):
            a, m = f"layers.{i}.self_attn.", f"layers.{i}.mlp."
            layers.append(LayerWeights(
                ln1=get(f"layers.{i}.input_layernorm.weight"),
                wqkv=cat([a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"]),
                bqkv=cat([a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias"], required=False),
                wo=get(a + "o_proj.weight"), bo=get(a + "o_proj.bias", False),
                ln2=get(f"layers.{i}.post_attention_layernorm.weight"),
                wgu=cat([m + "gate_proj.weight", m + "up_proj.weight"]),
                bgu=cat([m + "gate_proj.bias", m + "up_proj.bias"], required=False),
                wd=get(m + "down_proj.weight"), bd=get(m + "down_proj.bias", False),
            ))
        embed = get("embed_tokens.weight")
        head = None if s.tie_embeddings else get("lm_head.weight", required=strict)
        self.layers, self.embed, self.norm = layers, embed, get("norm.weight")
        self.lm_head = self._padded_head(embed if head is None else head)

    def _padded_head(self, head: torch.Tensor) -> torch.Tensor:
        """On the CPU, the lm_head with zero rows up to a multiple of 16: MKL's GEMM runs ~1.5x
        faster on such widths (measured, 512 x 128 by 128 x 1078 vs 1088) and the logits of the real
        rows are bitwise the same (the reduction over hidden does not change). (V', hidden)."""
        V = head.shape[0]
        if self.device.type != "cpu" or V % 16 == 0:
            return head
        return torch.cat([head, head.new_zeros(-V % 16, head.shape[1])])

    def _rms_norm(self, x: torch.Tensor, w: torch.Tensor, residual: torch.Tensor | None = None
                  ) -> torch.Tensor:
        """x: (T, hidden) -> RMSNorm(x) * w; with residual, x += residual (in place) first."""
        return add_rms_norm(x, w, self.spec.rms_eps, residual, backend=self.ops_backend)

    def hidden_states(self, input_ids: torch.Tensor, positions: torch.Tensor,
                      attend: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
                      ) -> torch.Tensor:
        """input_ids, positions: (T,) -> (T, hidden). attend(layer, q (T,H,D), k, v (T,Hkv,D)) -> (T, H*D)."""
        s = self.spec
        T, H, Hkv, D = input_ids.shape[0], s.num_heads, s.num_kv_heads, s.head_dim
        x = F.embedding(input_ids, self.embed)  # (T, hidden), a fresh tensor: updated in place below
        rope = self._rope_fn(positions)
        h = self._rms_norm(x, self.layers[0].ln1)
        for i, L in enumerate(self.layers):
            qkv = F.linear(h, L.wqkv, L.bqkv)  # (T, (H + 2Hkv) * D)
            qk = rope(qkv, H + Hkv)  # (T, H + Hkv, D)
            v = qkv[:, (H + Hkv) * D:].view(T, Hkv, D)
            o = attend(i, qk[:, :H], qk[:, H:], v)  # (T, H * D)
            h = self._rms_norm(x, L.ln2, residual=F.linear(o, L.wo, L.bo))
            gu = F.linear(h, L.wgu, L.bgu)
            act = silu_mul(gu, backend=self.ops_backend, overwrite=True)  # (T, intermediate)
            mlp = F.linear(act, L.wd, L.bd)
            if i + 1 < len(self.layers):
                h = self._rms_norm(x, self.layers[i + 1].ln1, residual=mlp)
            else:
                x += mlp
        return x

    def _rope_fn(self, positions: torch.Tensor) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """rope(qkv (T, >= n * D), n) -> the first n heads rotated at `positions`, (T, n, D)."""
        pos = positions.to(torch.int64).contiguous()
        return rope_fn(pos, self.cos, self.sin_signed, backend=self.ops_backend)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, hidden) -> (N, V) in float32."""
        return F.linear(self._rms_norm(x, self.norm), self.lm_head)[:, :self.spec.vocab_size].float()
