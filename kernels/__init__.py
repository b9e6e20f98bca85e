"""reversalkit.kernels: every op with a kernel, one module each: the fused log-prob and DPO losses
and the model's elementwise ops (Triton on CUDA, C++ or torch on CPU).

    token_logprobs(logits, targets)                      (N, V) logits -> (N,) log p(target)
    linear_token_logprobs(hidden, weight, targets)       same from (N, H) hidden + (V, H) lm_head,
                                                         never holding the (N, V) logits; gradients
                                                         computed in the forward (3 GEMMs for a
                                                         token sum or mean)
    sequence_logprobs(hidden, weight, input_ids, completion_mask) -> (sum (B,), mean (B,))
    dpo_loss(pc, pr, rc, rr, beta=, loss_type=)         sigmoid | ipo | hinge | robust
    linear_nll_loss / linear_dpo_loss                   the losses with gradients computed in the
                                                         forward (3 GEMMs, DPO's per-pair weights too)

The model's elementwise ops live in modules named after them (import from the module: the package
does not re-export them, so `reversalkit.kernels.rope` stays the module):
    rms_norm.add_rms_norm / rms_norm.rms_norm           RMSNorm: the sampler's (residual add fused,
                                                         no gradient) and training's (with gradients)
    rope.rope(qkv, positions, cos, sin_signed, n)       rotary embedding of the first n heads
    silu_mul.silu_mul(gu) / silu_mul.swiglu(gate, up)   SwiGLU's product: the sampler's, training's

Every op has a plain-torch `<op>_reference` (test oracle, benchmark baseline) and takes
`backend="auto" | "triton" | "torch"`, the model's ops also "cpp" (see `_backend.py`; "triton" on
CPU tensors runs Triton's interpreter and needs TRITON_INTERPRET=1).
"""

from ._backend import BACKENDS, has_triton
from .dpo import LOSS_TYPES, dpo_loss, dpo_loss_reference
from .fused_dpo import FusedDPOOutput, linear_dpo_loss
from .fused_loss import linear_nll_loss
from .linear_logprob import linear_token_logprobs, linear_token_logprobs_reference
from .logprob import token_logprobs, token_logprobs_reference
from .sequence import sequence_logprobs, sequence_logprobs_reference

__all__ = [
    "BACKENDS",
    "LOSS_TYPES",
    "FusedDPOOutput",
    "dpo_loss",
    "dpo_loss_reference",
    "has_triton",
    "linear_dpo_loss",
    "linear_nll_loss",
    "linear_token_logprobs",
    "linear_token_logprobs_reference",
    "sequence_logprobs",
    "sequence_logprobs_reference",
    "token_logprobs",
    "token_logprobs_reference",
]
