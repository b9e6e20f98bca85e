"""token_logprobs against a float64 oracle: forward and d/dlogits, CPU path and Triton (interpreted).

Tolerance rule (shared by the test_kernels_* files through `assert_within_torch_error`): the
kernel's max error against the float64 result may be at most twice the error of PyTorch computing
the same thing natively in the input dtype, plus half an ulp of the result's largest magnitude in
that dtype. The floor only matters where torch happens to be exact (e.g. a tensor of exact zeros
or a tiny case whose roundings all land exactly); no rounding to the dtype can do better than it.
"""

from __future__ import annotations

import pytest
import torch
from reversalkit.kernels import token_logprobs, token_logprobs_reference
from reversalkit.kernels._backend import has_triton, resolve_backend

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
needs_triton = pytest.mark.skipif(not has_triton(), reason="triton is not installed")


def max_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return (x.double() - ref.double()).abs().max().item() if x.numel() else 0.0


def assert_within_torch_error(
    name: str, kernel: torch.Tensor, torch_native: torch.Tensor, ref64: torch.Tensor, dtype: torch.dtype
) -> None:
    assert kernel.shape == ref64.shape, f"{name}: shape {tuple(kernel.shape)} != {tuple(ref64.shape)}"
    e_kernel, e_torch = max_err(kernel, ref64), max_err(torch_native, ref64)
    floor = 0.5 * torch.finfo(dtype).eps * (ref64.abs().max().item() if ref64.numel() else 0.0)
    assert e_kernel <= 2 * e_torch + floor, (
        f"{name}: kernel error {e_kernel:.3g} exceeds 2 x torch's {dtype} error {e_torch:.3g} "
        f"+ floor {floor:.3g}"
    )


def make_targets(n: int, v: int, gen: torch.Generator, ignore_frac: float = 0.25) -> torch.Tensor:
    t = torch.randint(0, v, (n,), generator=gen)
    ignored = torch.rand(n, generator=gen) < ignore_frac
    if n > 1:
        ignored[0] = False  # keep at least one scored row
    return torch.where(ignored, -100, t)


def native_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """PyTorch's own path in the logits' dtype (no upcast): the error yardstick."""
    valid = targets != -100
    lp = torch.log_softmax(logits, dim=-1).gather(1, torch.where(valid, targets, 0)[:, None]).squeeze(1)
    return lp * valid


def check_token_logprobs(n: int, v: int, dtype: torch.dtype, backend: str, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, v, generator=gen)).to(dtype)
    targets = make_targets(n, v, gen)
    grad_out = torch.randn(n, generator=gen)

    x64 = logits.double().requires_grad_()
    ref = token_logprobs_reference(x64, targets)
    (g_ref,) = torch.autograd.grad(ref, x64, grad_out.double())
    xn = logits.clone().requires_grad_()
    nat = native_logprobs(xn, targets)
    (g_nat,) = torch.autograd.grad(nat, xn, grad_out.to(dtype))
    xk = logits.clone().requires_grad_()
    out = token_logprobs(xk, targets, backend=backend)
    (g_k,) = torch.autograd.grad(out, xk, grad_out)

    assert out.dtype == torch.float32 and g_k.dtype == dtype
    assert_within_torch_error("logp", out, nat, ref, dtype)
    assert_within_torch_error("grad_logits", g_k, g_nat, g_ref, dtype)
    ignored = targets == -100
    assert torch.all(out[ignored] == 0) and torch.all(g_k[ignored] == 0), (
        "ignored rows must give 0 and no grad"
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,v", [(1, 5), (7, 5), (7, 1000), (333, 1000), (1, 32000), (333, 32000)])
def test_token_logprobs_cpu_path(n, v, dtype):
    check_token_logprobs(n, v, dtype, "torch")


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,v", [(1, 5), (7, 1000), (33, 777), (3, 32000)])
def test_token_logprobs_triton(n, v, dtype):
    check_token_logprobs(n, v, dtype, "triton", seed=1)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_token_logprobs_all_ignored_and_extreme_logits(backend):
    logits = torch.tensor([[0.0, -float("inf"), 5.0], [1e4, -1e4, 0.0], [2.0, 2.0, 2.0]], requires_grad=True)
    targets = torch.tensor([2, 0, -100])
    out = token_logprobs(logits, targets, backend=backend)
    ref = token_logprobs_reference(logits.detach().double(), targets)
    assert torch.allclose(out.double(), ref, atol=1e-6, rtol=0), (out, ref)
    out.sum().backward()
    assert torch.all(logits.grad[2] == 0)
    assert torch.isfinite(logits.grad).all()
    none = token_logprobs(torch.randn(4, 9), torch.full((4,), -100), backend=backend)
    assert torch.equal(none, torch.zeros(4))


def test_token_logprobs_rejects_bad_inputs():
    with pytest.raises(ValueError, match="2-D"):
        token_logprobs(torch.randn(2, 3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="targets must have shape"):
        token_logprobs(torch.randn(2, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        token_logprobs(torch.randn(2, 4), torch.tensor([1, 4]))
    with pytest.raises(ValueError, match="backend"):
        token_logprobs(torch.randn(2, 4), torch.tensor([1, 2]), backend="cuda")


def test_backend_resolution():
    cpu = torch.zeros(1)
    assert resolve_backend("auto", cpu) == "torch"
    assert resolve_backend("torch", cpu) == "torch"
    if has_triton():
        assert resolve_backend("triton", cpu) == "triton"  # conftest sets TRITON_INTERPRET=1 without a GPU
