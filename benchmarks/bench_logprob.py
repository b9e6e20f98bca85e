"""Benchmark: per-token log-probs from hidden states (and from logits), naive vs peers vs reversalkit.

    python -m benchmarks.bench_logprob            # N=4096, H=1024, V=32000 fp32 (the CPU targets)
    python -m benchmarks.bench_logprob --quick    # small shapes, a smoke run

Providers (CPU):
  naive          full (N, V) logits, fp32 log_softmax, gather (the baseline)
  liger          Liger's chunked_loss path, which is plain torch and runs on CPU: its fused linear GRPO
                 loss with beta=0, advantages 1 and the "dapo" token mean has exactly the NLL gradient,
                 so it does the same log-prob forward and backward (its Triton cross-entropy is GPU-only);
                 eager (compiled=False)
  liger-compiled the same with Liger's default compiled=True (torch.compile; the compiling first call
                 is excluded)
  trl            TRL's chunked log-prob autograd function (trl.kernels), plain torch on CPU
  rk             reversalkit linear_token_logprobs -> mean (per-token autograd, 4 GEMMs)
  rk-fused       reversalkit linear_nll_loss (gradients computed in the forward, 3 GEMMs)
  gemm-floor     the lm_head GEMMs alone, in rk's chunks; no loss: the least time any exact provider
                 can take on this BLAS
Each provider runs in its own process, which reports the peak memory of its first call and then times
one call per request while the providers take turns (see benchmarks/_kernel_common.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from benchmarks._kernel_common import bench_main, builders
from benchmarks.floor import gemm_floor

SHAPES = {"full": dict(n=4096, h=1024, v=32000), "quick": dict(n=512, h=256, v=8000)}
SEQ_LEN = 512  # Liger's chunked losses take (B, T, H); N tokens are viewed as N / 512 sequences


def _inputs(n, h, v, grad, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=gen).requires_grad_(grad)
    weight = (torch.randn(v, h, generator=gen) / h**0.5).requires_grad_(grad)
    return hidden, weight, torch.randint(0, v, (n,), generator=gen)


def _liger_nll(hidden, weight, targets, compiled=False):
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    loss_fn = LigerFusedLinearGRPOLoss(beta=0.0, use_ref_model=False, loss_type="dapo", compiled=compiled)
    b = max(hidden.shape[0] // SEQ_LEN, 1)
    shape = (b, hidden.shape[0] // b)
    ones = torch.ones(shape)
    return lambda: loss_fn(hidden.view(*shape, -1), weight, targets.view(shape), ones, torch.ones(b))[0]


def _trl_logps(hidden, weight, targets):
    from trl.kernels import ChunkedLogProbFunction

    return lambda: ChunkedLogProbFunction.apply(
        hidden, weight, None, targets, 1.0, 32768, None, 1.0, ("log_probs",)
    )[0]


def linear_providers(shape: dict, backward: bool) -> dict[str, Callable[[], Callable[[], object]]]:
    """name -> builder() -> zero-argument call (built inside the worker process)."""
    from reversalkit.kernels import linear_nll_loss, linear_token_logprobs, linear_token_logprobs_reference
    from reversalkit.kernels._backend import chunk_rows

    mean = (lambda lp: -lp.mean()) if backward else (lambda lp: lp)
    bodies = {
        "naive": lambda h, w, t: lambda: mean(linear_token_logprobs_reference(h, w, t)),
        "liger": _liger_nll,
        "trl": lambda h, w, t: (lambda f: lambda: mean(f()))(_trl_logps(h, w, t)),
        "rk": lambda h, w, t: lambda: mean(linear_token_logprobs(h, w, t)),
        "gemm-floor": lambda h, w, t: gemm_floor(h, w, chunk_rows(h.shape[0], w.shape[0], h.device, None)),
    }
    if backward:
        bodies["liger-compiled"] = lambda h, w, t: _liger_nll(h, w, t, compiled=True)
        bodies["rk-fused"] = lambda h, w, t: lambda: linear_nll_loss(h, w, t)
    return builders(lambda: _inputs(**shape, grad=backward), bodies, backward)


def token_providers(shape: dict) -> dict[str, Callable[[], Callable[[], object]]]:
    from reversalkit.kernels import token_logprobs, token_logprobs_reference

    def make_inputs():
        gen = torch.Generator().manual_seed(0)
        logits = torch.randn(shape["n"], shape["v"], generator=gen).requires_grad_()
        return logits, torch.randint(0, shape["v"], (shape["n"],), generator=gen)

    bodies = {
        "naive": lambda x, t: lambda: token_logprobs_reference(x, t).sum(),
        "rk": lambda x, t: lambda: token_logprobs(x, t).sum(),
    }
    return builders(make_inputs, bodies, backward=True)


def cases(shape_name: str) -> dict[str, tuple[dict, Callable[[], dict]]]:
    shape = SHAPES[shape_name]
    return {
        "linear fwd": (shape, lambda: linear_providers(shape, backward=False)),
        "linear fwd+bwd": (shape, lambda: linear_providers(shape, backward=True)),
        "token_logprobs fwd+bwd": (shape, lambda: token_providers(shape)),
    }


def main(argv=None) -> None:
    bench_main("benchmarks.bench_logprob", "logprob", __doc__, cases, "linear fwd+bwd", argv)


if __name__ == "__main__":
    main()
