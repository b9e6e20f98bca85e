"""dpo_loss and the fused linear_dpo_loss against float64 oracles (tolerance: test_kernels_logprob.py)."""

from __future__ import annotations

import pytest
import torch
from reversalkit.kernels import (
    LOSS_TYPES,
    dpo_loss,
    dpo_loss_reference,
    linear_dpo_loss,
    sequence_logprobs,
    sequence_logprobs_reference,
)
from test_kernels_linear import make_batch
from test_kernels_logprob import assert_within_torch_error, needs_triton

BACKENDS = ["torch", pytest.param("triton", marks=needs_triton)]
SMOOTHING = {"sigmoid": [0.0, 0.1], "robust": [0.0, 0.2], "ipo": [0.0], "hinge": [0.0]}
CASES = [(lt, eps) for lt in LOSS_TYPES for eps in SMOOTHING[lt]]


def make_logps(b, seed):
    gen = torch.Generator().manual_seed(seed)
    pc, pr = -50 + 10 * torch.randn(b, generator=gen), -50 + 10 * torch.randn(b, generator=gen)
    rc, rr = pc + 5 * torch.randn(b, generator=gen), pr + 5 * torch.randn(b, generator=gen)
    return pc, pr, rc, rr  # beta = 0.5 puts z = beta * m across (-20, 20): both tails of every loss


def run_dpo(fn, logps, **kw):
    xs = [x.clone().requires_grad_() for x in logps]
    loss, cr, rr = fn(*xs, **kw)
    return (loss, cr, rr, *torch.autograd.grad(loss, xs))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss_type,eps", CASES)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_dpo_loss(loss_type, eps, reduction, backend):
    logps = make_logps(333, 0)
    kw = dict(beta=0.5, loss_type=loss_type, label_smoothing=eps, reduction=reduction)
    if reduction == "none":  # backward through per-pair losses with a random upstream gradient
        w = torch.randn(333, generator=torch.Generator().manual_seed(1))
        wrap = lambda fn: (
            lambda *x, **k: (lambda o: ((o[0] * w.to(o[0].dtype)).sum(), o[1], o[2]))(fn(*x, **k))
        )
    else:
        wrap = lambda fn: fn
    ref = run_dpo(wrap(dpo_loss_reference), [x.double() for x in logps], **kw)
    nat = run_dpo(wrap(dpo_loss_reference), logps, **kw)
    ker = run_dpo(wrap(lambda *x, **k: dpo_loss(*x, backend=backend, **k)), logps, **kw)
    names = ("loss", "chosen_rewards", "rejected_rewards", "d_pc", "d_pr", "d_rc", "d_rr")
    for name, k, t, r in zip(names, ker, nat, ref):
        assert_within_torch_error(f"{loss_type}/{name}", k, t, r, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dpo_loss_known_values(backend):
    # m = 0 for every pair: sigmoid and robust give log 2, hinge 1, ipo 1 / (2 beta)^2.
    z = torch.zeros(3)
    expect = {"sigmoid": 0.6931471805599453, "robust": 0.6931471805599453, "hinge": 1.0, "ipo": 1.0}
    for lt, v in expect.items():
        loss, cr, rr = dpo_loss(z, z, z, z, beta=0.5, loss_type=lt, backend=backend)
        assert abs(loss.item() - v) < 1e-6, (lt, loss.item())
        assert torch.equal(cr, z) and torch.equal(rr, z)


def test_dpo_loss_rejects_bad_config():
    x = torch.zeros(4)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(x, x, x, x, loss_type="kto")
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        dpo_loss(x, x, x, x, loss_type="robust", label_smoothing=0.5)
    with pytest.raises(ValueError, match="'sigmoid' and 'robust' only"):
        dpo_loss(x, x, x, x, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="ref_rejected_logps must be 1-D with shape"):
        dpo_loss(x, x, x, torch.zeros(3))


def composed_dpo(hidden, weight, ids, mask, rc, rr, beta, loss_type, eps, nll_weight):
    """Oracle: naive sequence log-probs -> dpo_loss_reference (+ chosen NLL per token)."""
    b = hidden.shape[0] // 2
    sums, means = sequence_logprobs_reference(hidden, weight, ids, mask)
    counts = mask[:, 1:].sum(1).clamp(min=1).to(sums.dtype)
    if loss_type == "ipo":
        args = (means[:b], means[b:], rc.to(sums.dtype) / counts[:b], rr.to(sums.dtype) / counts[b:])
    else:
        args = (sums[:b], sums[b:], rc.to(sums.dtype), rr.to(sums.dtype))
    loss, _, _ = dpo_loss_reference(*args, beta=beta, loss_type=loss_type, label_smoothing=eps)
    nll = -sums[:b].sum() / mask[:b, 1:].sum()
    return loss + nll_weight * nll, sums


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "loss_type,eps,nll_weight",
    [
        ("sigmoid", 0.0, 0.0),
        ("sigmoid", 0.1, 0.5),
        ("robust", 0.2, 0.0),
        ("hinge", 0.0, 0.0),
        ("ipo", 0.0, 1.0),
    ],
)
def test_linear_dpo_loss_matches_composition(loss_type, eps, nll_weight, backend):
    hidden, weight, ids, mask = make_batch(24, 13, 24, 257, torch.float32, 2)
    mask[-1, 5:9] = 1  # every sequence needs tokens for the oracle's NLL normaliser to match
    b = 12
    gen = torch.Generator().manual_seed(3)
    rc, rr = -40 + 5 * torch.randn(b, generator=gen), -40 + 5 * torch.randn(b, generator=gen)
    cfg = (0.5, loss_type, eps, nll_weight)

    def run(fn, h, w):
        h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
        loss, sums = fn(h, w)
        return (loss, sums, *torch.autograd.grad(loss, (h, w)))

    ref = run(lambda h, w: composed_dpo(h, w, ids, mask, rc, rr, *cfg), hidden.double(), weight.double())
    nat = run(lambda h, w: composed_dpo(h, w, ids, mask, rc, rr, *cfg), hidden, weight)

    def fused(h, w):
        out = linear_dpo_loss(
            h,
            w,
            ids,
            mask,
            rc,
            rr,
            beta=0.5,
            loss_type=loss_type,
            label_smoothing=eps,
            nll_weight=nll_weight,
            chunk_size=48,
            backend=backend,
        )
        return out.loss, torch.cat([out.chosen_logps, out.rejected_logps])

    ker = run(fused, hidden, weight)
    for name, k, t, r in zip(("seq_logps", "grad_hidden", "grad_weight"), ker[1:], nat[1:], ref[1:]):
        assert_within_torch_error(f"{loss_type}/{name}", k, t, r, torch.float32)
    # A scalar's error is one random draw, so the 2x rule on it would test luck: the sums it is built
    # from pass the rule above, and given those sums the loss must be exact to a few fp32 ulps.
    sums = ker[1].detach().double()
    counts = mask[:, 1:].sum(1).clamp(min=1).double()
    if loss_type == "ipo":
        args = (
            sums[:b] / counts[:b],
            sums[b:] / counts[b:],
            rc.double() / counts[:b],
            rr.double() / counts[b:],
        )
    else:
        args = (sums[:b], sums[b:], rc.double(), rr.double())
    expect = dpo_loss_reference(*args, beta=0.5, loss_type=loss_type, label_smoothing=eps)[0]
    expect = expect - nll_weight * sums[:b].sum() / mask[:b, 1:].sum()
    assert abs(ker[0].item() - expect.item()) <= 8 * torch.finfo(torch.float32).eps * max(
        1.0, abs(expect.item())
    )


@pytest.mark.parametrize("backend", ["torch"])  # the sums and margins are the same Python code for both
def test_long_completions_keep_sums_and_margins_exact(backend):
    """Sums of ~400 log-probs of ~-6: a float32 running sum drifts by many ulps of the total, which the
    margin then carries into loss and gradients; the kernels sum in float64 and must stay within the
    2x-torch rule where a float32 accumulation fails it (torch's own sum is pairwise)."""
    hidden, weight, ids, mask = make_batch(8, 401, 16, 300, torch.float32, 5)
    mask[-1, 3:] = 1
    b = 4
    gen = torch.Generator().manual_seed(6)
    rc, rr = -2300 + 5 * torch.randn(b, generator=gen), -2300 + 5 * torch.randn(b, generator=gen)

    def run(fn, h, w):
        h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
        loss, sums = fn(h, w)
        return (loss, sums, *torch.autograd.grad(loss, (h, w)))

    oracle = lambda h, w: composed_dpo(h, w, ids, mask, rc, rr, 0.5, "sigmoid", 0.0, 0.0)  # noqa: E731
    ref, nat = run(oracle, hidden.double(), weight.double()), run(oracle, hidden, weight)

    def fused(h, w):
        out = linear_dpo_loss(h, w, ids, mask, rc, rr, beta=0.5, backend=backend)
        return out.loss, torch.cat([out.chosen_logps, out.rejected_logps])

    def unfused(h, w):
        sums, _ = sequence_logprobs(h, w, ids, mask, backend=backend)
        return dpo_loss(sums[:b], sums[b:], rc, rr, beta=0.5, backend=backend)[0], sums

    # The unfused loss starts from sums rounded to float32 (its interface), as torch's does, so only
    # the fused loss, formed from float64 sums, is held to the rule.
    for label, fn, first in (("linear_dpo_loss", fused, 0), ("sequence_logprobs + dpo_loss", unfused, 1)):
        ker = run(fn, hidden, weight)
        names = ("loss", "seq_logps", "grad_hidden", "grad_weight")
        for name, k, t, r in list(zip(names, ker, nat, ref))[first:]:
            assert_within_torch_error(f"{label}/{name}", k, t, r, torch.float32)
