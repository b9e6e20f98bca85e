"""Benchmark: a DPO step's loss from hidden states, naive vs Liger vs TRL vs reversalkit.

    python -m benchmarks.bench_dpo            # 4 pairs x 512 completion tokens (N=4096), H=1024, V=32000 fp32
    python -m benchmarks.bench_dpo --quick    # small shapes

Work per call: chosen and rejected sequence log-probs from (2B, T, H) hidden states and the lm_head,
the DPO sigmoid loss against cached reference log-probs, and (fwd+bwd) the gradients of hidden and
weight. Providers:
  naive          full logits, fp32 log_softmax, gather, masked sums, dpo_loss_reference (baseline)
  liger          LigerFusedLinearDPOLoss, eager (its chunked_loss path is plain torch; one pair per chunk)
  liger-compiled the same with Liger's default compiled=True (the compiling first call is excluded)
  trl            TRL's DPO flow: its chunked log-prob function on the completion tokens, sums, sigmoid loss
  rk             reversalkit sequence_logprobs -> dpo_loss (per-token autograd, 4 GEMMs)
  rk-fused       reversalkit linear_dpo_loss (gradients in the forward, 3 GEMMs)
  gemm-floor     the lm_head GEMMs alone on the scored rows, one pair's rows per chunk as rk-fused
                 runs them; no loss: the least time any exact provider can take on this BLAS
Every provider runs in its own process, the providers taking turns (see benchmarks/_kernel_common.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from benchmarks._kernel_common import bench_main, builders
from benchmarks.floor import gemm_floor

SHAPES = {"full": dict(b=4, t=513, h=1024, v=32000), "quick": dict(b=2, t=129, h=256, v=8000)}
BETA = 0.1


def _batch(b, t, h, v, grad):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2 * b, t, h, generator=gen).requires_grad_(grad)
    weight = (torch.randn(v, h, generator=gen) / h**0.5).requires_grad_(grad)
    ids = torch.randint(0, v, (2 * b, t), generator=gen)
    mask = torch.ones(2 * b, t, dtype=torch.long)
    mask[:, 0] = 0  # one prompt token: T - 1 scored positions per sequence
    ref = -10.0 * (t - 1) + torch.randn(2, b, generator=gen)
    return hidden, weight, ids, mask, ref[0], ref[1]


def _two_stage(seq_logprobs, loss, hidden, weight, ids, mask, rc, rr):
    """Per-sequence log-probs of chosen (first half) and rejected rows, then the DPO loss on them."""
    b = rc.shape[0]

    def run():
        sums, _ = seq_logprobs(hidden, weight, ids, mask)
        return loss(sums[:b], sums[b:], rc, rr, beta=BETA)[0]

    return run


def _naive(*batch):
    from reversalkit.kernels import dpo_loss_reference, sequence_logprobs_reference

    return _two_stage(sequence_logprobs_reference, dpo_loss_reference, *batch)


def _liger(hidden, weight, ids, mask, rc, rr, compiled=False):
    from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss

    # Liger computes reference log-probs itself from a reference model or uses 0; with 0 it does the
    # same policy work as the others, which take cached reference log-probs.
    loss_fn = LigerFusedLinearDPOLoss(beta=BETA, use_ref_model=False, compiled=compiled)
    targets = torch.where(mask[:, 1:].bool(), ids[:, 1:], -100)
    return lambda: loss_fn(weight, hidden[:, :-1], targets)[0]


def _trl(hidden, weight, ids, mask, rc, rr):
    import torch.nn.functional as F
    from trl.kernels import ChunkedLogProbFunction

    keep = mask[:, 1:].bool()
    seq = torch.arange(ids.shape[0]).unsqueeze(1).expand_as(keep)[keep]
    b = rc.shape[0]

    def run():
        lp = ChunkedLogProbFunction.apply(
            hidden[:, :-1][keep], weight, None, ids[:, 1:][keep], 1.0, 32768, None, 1.0, ("log_probs",)
        )[0]
        sums = torch.zeros(ids.shape[0]).index_add(0, seq, lp)
        return -F.logsigmoid(BETA * ((sums[:b] - rc) - (sums[b:] - rr))).mean()

    return run


def _rk(*batch):
    from reversalkit.kernels import dpo_loss, sequence_logprobs

    return _two_stage(sequence_logprobs, dpo_loss, *batch)


def _rk_fused(hidden, weight, ids, mask, rc, rr):
    from reversalkit.kernels import linear_dpo_loss

    return lambda: linear_dpo_loss(hidden, weight, ids, mask, rc, rr, beta=BETA).loss


def _floor(hidden, weight, ids, mask, rc, rr):
    scored = hidden[:, :-1].detach().requires_grad_(hidden.requires_grad)  # (2B, T-1, H), as rk-fused scores
    return gemm_floor(scored, weight, chunk=2 * scored.shape[1])


def providers(shape: dict, backward: bool) -> dict[str, Callable[[], Callable[[], object]]]:
    bodies = {"naive": _naive, "liger": _liger, "trl": _trl, "rk": _rk, "rk-fused": _rk_fused}
    bodies["gemm-floor"] = _floor
    if backward:
        bodies["liger-compiled"] = lambda *batch: _liger(*batch, compiled=True)
    return builders(lambda: _batch(**shape, grad=backward), bodies, backward)


def cases(shape_name: str) -> dict:
    s = SHAPES[shape_name]
    shape = dict(s, n=2 * s["b"] * (s["t"] - 1))  # n: scored tokens, for the throughput column
    build = {k: v for k, v in shape.items() if k != "n"}
    return {
        "dpo fwd": (shape, lambda: providers(build, backward=False)),
        "dpo fwd+bwd": (shape, lambda: providers(build, backward=True)),
    }


def main(argv=None) -> None:
    bench_main("benchmarks.bench_dpo", "dpo", __doc__, cases, "dpo fwd+bwd", argv)


if __name__ == "__main__":
    main()
