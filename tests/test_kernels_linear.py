"""linear_token_logprobs, sequence_logprobs and linear_nll_loss against float64 oracles.

Forward and the gradients of hidden and weight, regular and odd shapes (H never a power of two),
ignored rows, fp32/bf16/fp16; chunk sizes small enough that forward chunks and backward vocab
tiles both split. Tolerance rule: see test_kernels_logprob.py.
"""

from __future__ import annotations

import pytest
import torch
from reversalkit.kernels import (
    linear_nll_loss,
    linear_token_logprobs,
    linear_token_logprobs_reference,
    sequence_logprobs,
    sequence_logprobs_reference,
)
from test_kernels_logprob import DTYPES, assert_within_torch_error, make_targets, needs_triton
from torch.utils._python_dispatch import TorchDispatchMode


def make_linear(n, h, v, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=gen).to(dtype)
    weight = (torch.randn(v, h, generator=gen) / h**0.5 * 2).to(dtype)
    return hidden, weight, make_targets(n, v, gen), torch.randn(n, generator=gen)


def native_linear(hidden, weight, targets):
    """PyTorch's own path in the input dtype: logits, log_softmax and gather all in that dtype."""
    valid = targets != -100
    logp = torch.log_softmax(hidden @ weight.t(), dim=-1)
    return logp.gather(1, torch.where(valid, targets, 0)[:, None]).squeeze(1) * valid


def run_with_grads(fn, hidden, weight, grad_out):
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    out = fn(h, w)
    gh, gw = torch.autograd.grad(out, (h, w), grad_out.to(out.dtype))
    return out, gh, gw


def check_linear(n, h, v, dtype, backend, chunk_size, seed=0, device="cpu"):
    hidden, weight, targets, grad_out = (x.to(device) for x in make_linear(n, h, v, dtype, seed))
    ref = run_with_grads(
        lambda a, b: linear_token_logprobs_reference(a, b, targets),
        hidden.double(),
        weight.double(),
        grad_out.double(),
    )
    nat = run_with_grads(lambda a, b: native_linear(a, b, targets), hidden, weight, grad_out)
    ker = run_with_grads(
        lambda a, b: linear_token_logprobs(a, b, targets, chunk_size=chunk_size, backend=backend),
        hidden,
        weight,
        grad_out,
    )
    assert ker[0].dtype == torch.float32 and ker[1].dtype == dtype and ker[2].dtype == dtype
    for name, k, t, r in zip(("logp", "grad_hidden", "grad_weight"), ker, nat, ref):
        assert_within_torch_error(name, k, t, r, dtype)
    ignored = targets == -100
    assert torch.all(ker[0][ignored] == 0) and torch.all(ker[1][ignored] == 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "n,h,v,chunk", [(1, 24, 5, None), (7, 48, 1000, 3), (333, 72, 1000, 100), (333, 40, 32000, 64)]
)
def test_linear_token_logprobs_cpu_path(n, h, v, chunk, dtype):
    check_linear(n, h, v, dtype, "torch", chunk)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("n,h,v,chunk", [(1, 24, 5, None), (7, 48, 1000, 3), (20, 40, 3000, 8)])
def test_linear_token_logprobs_triton(n, h, v, chunk, dtype):
    check_linear(n, h, v, dtype, "triton", chunk, seed=1)


def test_linear_token_logprobs_fp64_inputs_every_chunking():
    # fp64 GEMMs leave only the fp32 rounding of logp and lse: every chunking must sit within a few
    # fp32 ulps of the oracle (1e-6 relative), far below any fp32 path's error at this size.
    hidden, weight, targets, grad_out = make_linear(50, 24, 300, torch.float64, 3)
    ref = run_with_grads(
        lambda a, b: linear_token_logprobs_reference(a, b, targets), hidden, weight, grad_out
    )
    for chunk in (1, 7, 50, None):
        out = run_with_grads(
            lambda a, b, c=chunk: linear_token_logprobs(a, b, targets, chunk_size=c), hidden, weight, grad_out
        )
        for k, r in zip(out, ref):
            assert torch.allclose(k.double(), r, atol=1e-6 * r.abs().max().item(), rtol=1e-6)


class GemmCounter(TorchDispatchMode):
    """Counts the matrix products (mm / addmm) run while active."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_):
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("chunk", [1, 4, None])
def test_linear_token_logprobs_uniform_grad_is_computed_in_forward(dtype, chunk):
    # A token sum/mean gives every scored row the same upstream gradient: the gradients come from the
    # forward (3 GEMMs a chunk) and backward runs none. Ignored rows get a different, even non-finite,
    # upstream gradient, which must neither count nor leak. chunk=1 puts 1-row chunks through the
    # GEMMs (see MIN_GEMM_ROWS_PER_THREAD) at a vocabulary long enough for their accuracy to show.
    hidden, weight, targets, _ = make_linear(9, 40, 32000, dtype, 6)
    grad_out = torch.where(targets != -100, 0.37, float("nan"))
    ref = run_with_grads(
        lambda a, b: linear_token_logprobs_reference(a, b, targets),
        hidden.double(),
        weight.double(),
        torch.where(targets != -100, 0.37, 0.0).double(),
    )
    nat = run_with_grads(lambda a, b: native_linear(a, b, targets), hidden, weight, grad_out.nan_to_num())
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    with GemmCounter() as fwd:
        out = linear_token_logprobs(h, w, targets, chunk_size=chunk, backend="torch")
    with GemmCounter() as bwd:
        gh, gw = torch.autograd.grad(out, (h, w), grad_out)
    n_chunks = -(-9 // (chunk or 9))
    assert (fwd.count, bwd.count) == (3 * n_chunks, 0)
    for name, k, t, r in zip(("logp", "grad_hidden", "grad_weight"), (out, gh, gw), nat, ref):
        assert_within_torch_error(name, k, t, r, dtype)


def test_linear_token_logprobs_backward_paths_agree():
    # Per-row upstream gradients: grad_hidden still comes from the forward, grad_weight from a
    # recompute; a second backward (retain_graph) finds the forward's results used up and recomputes
    # both; grad_in_forward=False never computes them in the forward. All agree to fp32 rounding.
    hidden, weight, targets, grad_out = make_linear(33, 24, 500, torch.float32, 2)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    out = linear_token_logprobs(h, w, targets, chunk_size=8)
    with GemmCounter() as bwd:
        first = torch.autograd.grad(out, (h, w), grad_out, retain_graph=True)
    tiles = -(-500 // (8 * 500 // 33))  # backward vocabulary tiles hold as many logits as a chunk: 5
    assert bwd.count == 2 * tiles  # recomputed logits and grad_weight; no grad_hidden GEMM
    second = torch.autograd.grad(out, (h, w), grad_out)
    with GemmCounter() as fwd:
        plain = run_with_grads(
            lambda a, b: linear_token_logprobs(a, b, targets, chunk_size=8, grad_in_forward=False),
            hidden,
            weight,
            grad_out,
        )
    assert fwd.count == 5 + 3 * tiles  # 5 forward chunks of logits; per tile: logits, grad_w, grad_h
    assert torch.equal(plain[0], out)
    for a, b, c in zip(first, second, plain[1:]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6) and torch.allclose(a, c, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # no gradient wanted: the plain forward, the same log-probs
        assert torch.equal(linear_token_logprobs(h, w, targets, chunk_size=8), out.detach())


def test_linear_token_logprobs_rejects_bad_inputs():
    h, w = torch.randn(3, 8), torch.randn(10, 8)
    with pytest.raises(ValueError, match=r"weight must be \(V, 8\)"):
        linear_token_logprobs(h, torch.randn(10, 7), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_size"):
        linear_token_logprobs(h, w, torch.zeros(3, dtype=torch.long), chunk_size=0)
    with pytest.raises(ValueError, match="int32 or int64"):
        linear_token_logprobs(h, w, torch.zeros(3))


def make_batch(b, t, h, v, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, h, generator=gen).to(dtype)
    weight = (torch.randn(v, h, generator=gen) / h**0.5 * 2).to(dtype)
    ids = torch.randint(0, v, (b, t), generator=gen)
    mask = torch.zeros(b, t, dtype=torch.long)
    for i in range(b):  # prompt of 2..4 tokens, completion, right padding
        start, end = 2 + i % 3, t - (i % 4)
        mask[i, start:end] = 1
    mask[-1] = 0  # a row without completion tokens: sum 0, mean 0
    return hidden, weight, ids, mask


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_sequence_logprobs(backend, dtype):
    hidden, weight, ids, mask = make_batch(5, 11, 24, 300, dtype, 0)
    gs, gm = torch.randn(5), torch.randn(5)

    def run(fn, h, w):
        h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
        s, m = fn(h, w)
        return (s, m, *torch.autograd.grad((s * gs.to(s.dtype)).sum() + (m * gm.to(m.dtype)).sum(), (h, w)))

    ref = run(lambda h, w: sequence_logprobs_reference(h, w, ids, mask), hidden.double(), weight.double())
    nat = run(lambda h, w: sequence_logprobs_reference(h, w, ids, mask), hidden, weight)
    ker = run(lambda h, w: sequence_logprobs(h, w, ids, mask, chunk_size=7, backend=backend), hidden, weight)
    if dtype != torch.float32:  # the reference upcasts log_softmax; torch's own path stays in dtype
        b, t, h = hidden.shape
        tg = torch.where(mask[:, 1:].bool(), ids[:, 1:], -100).reshape(-1)
        nat_tok = lambda hh, ww: native_linear(hh[:, :-1].reshape(-1, h), ww, tg).view(b, t - 1)
        nat = run(
            lambda hh, ww: (nat_tok(hh, ww).sum(1), nat_tok(hh, ww).sum(1) / mask[:, 1:].sum(1).clamp(min=1)),
            hidden,
            weight,
        )
    for name, k, t_, r in zip(("sum", "mean", "grad_hidden", "grad_weight"), ker, nat, ref):
        assert_within_torch_error(name, k, t_, r, dtype)
    assert ker[0][-1] == 0 and ker[1][-1] == 0 and torch.all(ker[2][-1] == 0)
    assert torch.all(ker[2][:, -1] == 0), "the last position predicts nothing and gets no gradient"


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_nll_loss_matches_token_logprobs(backend, reduction):
    hidden, weight, targets, _ = make_linear(37, 40, 700, torch.float32, 5)
    n_valid = int((targets != -100).sum()) if reduction == "mean" else 1
    ref = run_with_grads(
        lambda a, b: -linear_token_logprobs_reference(a, b, targets).sum() / n_valid,
        hidden.double(),
        weight.double(),
        torch.tensor(1.0, dtype=torch.float64),
    )
    nat = run_with_grads(
        lambda a, b: -linear_token_logprobs_reference(a, b, targets).sum() / n_valid,
        hidden,
        weight,
        torch.tensor(1.0),
    )
    ker = run_with_grads(
        lambda a, b: linear_nll_loss(a, b, targets, reduction=reduction, chunk_size=9, backend=backend),
        hidden,
        weight,
        torch.tensor(1.0),
    )
    for name, k, t, r in zip(("loss", "grad_hidden", "grad_weight"), ker, nat, ref):
        assert_within_torch_error(name, k, t, r, torch.float32)
    # backward scales the stored gradients by the incoming gradient
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    (3.0 * linear_nll_loss(h, w, targets, reduction=reduction, backend=backend)).backward()
    assert torch.allclose(h.grad, 3.0 * ker[1], rtol=1e-5, atol=1e-7)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("n,h,v,chunk", [(7, 48, 1000, 3), (333, 72, 32000, 64), (1031, 1000, 50257, None)])
def test_linear_token_logprobs_cuda(n, h, v, chunk, dtype):
    check_linear(n, h, v, dtype, "auto", chunk, seed=4, device="cuda")
