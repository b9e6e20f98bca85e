"""RMSNorm (kernels/rms_norm.py) on every path against a float64 oracle: the sampler's add_rms_norm
(Triton, interpreted on the CPU; C++; torch) and training's rms_norm (C++ and torch, forward and both
gradients), on odd shapes; the C++ entries' argument checks.

Tolerance rule of test_kernels_logprob (`assert_within_torch_error`): a path's error against float64
is at most 2x torch's own error in that dtype plus half an ulp of the result's scale. The torch path
is the reference itself, checked bitwise, and its own error is bounded by a few roundings
(`REFERENCE_ULPS`). bf16 runs only where CUDA runs the kernels: Triton's interpreter converts fp32
-> bf16 by truncation where CUDA and torch round to nearest (fp16 converts correctly there)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reversalkit.kernels._backend import has_triton
from reversalkit.kernels.rms_norm import (
    _cpp_is_bitwise,
    add_rms_norm,
    add_rms_norm_reference,
    rms_norm,
    rms_norm_reference,
)
from test_kernels_logprob import assert_within_torch_error, max_err

from reversalkit._ext import has_native, native

DEV = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEV == "cuda" else [])
# The reference rounds a handful of times per element (square, mean, rsqrt, product, product): its
# error stays within this many ulps of the result's largest magnitude.
REFERENCE_ULPS = 4
needs_native = pytest.mark.skipif(not has_native(), reason="reversalkit._C is not built")


def paths(dtype: torch.dtype, cpp: bool = True) -> list[str]:
    out = ["torch"]
    if has_triton():
        out.append("triton")
    if cpp and has_native() and DEV == "cpu" and dtype == torch.float32:
        out.append("cpp")
    return out


def add_rms_norm_exact(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    xs = x.double()
    return xs / (xs.pow(2).mean(-1, keepdim=True) + eps).sqrt() * w.double()


def check_reference_bound(name, ref, exact, dtype):
    bound = REFERENCE_ULPS * torch.finfo(dtype).eps * exact.abs().max().item()
    assert max_err(ref, exact) <= bound, f"{name}: reference error {max_err(ref, exact):.3g} > {bound:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,N", [(1, 64), (7, 200), (33, 2048), (6, 123)])
@pytest.mark.parametrize("residual", [False, True])
def test_add_rms_norm_every_path(dtype, T, N, residual):
    g = torch.Generator().manual_seed(T * N)
    x = (torch.randn(T, N, generator=g) * 3).to(DEV, dtype)
    r = torch.randn(T, N, generator=g).to(DEV, dtype) if residual else None
    w = (1 + torch.randn(N, generator=g)).to(DEV, dtype)
    x_ref = x.clone()
    want = add_rms_norm_reference(x_ref, w, 1e-6, r)  # x_ref: the residual stream after the add
    exact = add_rms_norm_exact(x_ref, w, 1e-6)
    check_reference_bound("add_rms_norm reference", want, exact, dtype)
    for path in paths(dtype):
        x_k = x.clone()
        got = add_rms_norm(x_k, w, 1e-6, r, backend=path)
        assert torch.equal(x_k, x_ref), path  # the residual stream, updated in place with torch's rounding
        if path == "torch":
            assert torch.equal(got, want)
        assert_within_torch_error(f"add_rms_norm {path}", got, want, exact, dtype)


@needs_native
@pytest.mark.parametrize("width", [32, 64, 128, 768, 4096])
def test_add_rms_norm_cpp_is_bitwise_torch_where_auto_takes_it(width):
    """At widths that are multiples of 32 the C++ pass mirrors F.rms_norm's float order: "auto" takes
    it there, and it must equal torch bit for bit on fresh data."""
    assert _cpp_is_bitwise(width, 1e-6)
    g = torch.Generator().manual_seed(width)
    x = torch.randn(50, width, generator=g) * torch.logspace(-2, 2, 50)[:, None]
    r, w = torch.randn(50, width, generator=g), torch.randn(width, generator=g)
    xc, xt = x.clone(), x.clone()
    got = add_rms_norm(xc, w, 1e-6, r, backend="cpp")
    want = add_rms_norm_reference(xt, w, 1e-6, r)
    assert torch.equal(xc, xt) and torch.equal(got, want)


@pytest.mark.parametrize("path", ["torch", "cpp"])
def test_add_rms_norm_rejects_mismatched_shapes(path):
    if path == "cpp" and not has_native():
        pytest.skip("reversalkit._C is not built")
    with pytest.raises(ValueError, match=r"\(4,\)"):
        add_rms_norm(torch.zeros(2, 3), torch.ones(4), 1e-6, backend=path)
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        add_rms_norm(torch.zeros(2, 3), torch.ones(3), 1e-6, torch.zeros(2, 4), backend=path)


# ---- training's rms_norm: forward and both gradients ----

SHAPES = [(1, 5), (7, 128), (333, 130), (2, 9, 1000)]


def grads_of(fn, inputs, upstream):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    out.backward(upstream.to(out.dtype))
    return out.detach(), [x.grad for x in leaves]


def check_every_path(name, op, reference, inputs, upstream, dtype, op_paths):
    """Each path of `op` against `reference` run in float64: output and every input gradient."""
    ref_out, ref_grads = grads_of(reference, [x.double() for x in inputs], upstream)
    t_out, t_grads = grads_of(reference, inputs, upstream)
    for path in op_paths:
        k_out, k_grads = grads_of(lambda *a, p=path: op(*a, backend=p), inputs, upstream)
        if path == "torch":
            assert torch.equal(k_out, t_out) and all(map(torch.equal, k_grads, t_grads)), name
        assert_within_torch_error(f"{name} {path} forward", k_out, t_out, ref_out, dtype)
        for i, (k, t, r) in enumerate(zip(k_grads, t_grads, ref_grads, strict=True)):
            assert_within_torch_error(f"{name} {path} grad of input {i}", k, t, r, dtype)


def rms_norm_paths(dtype):
    return [p for p in paths(dtype) if p != "triton"]  # no Triton kernel for training's rms_norm


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_rms_norm_every_path_and_gradient(shape, dtype):
    gen = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(*shape, generator=gen) * 3).to(DEV, dtype)
    w = (1 + 0.5 * torch.randn(shape[-1], generator=gen)).to(DEV, dtype)
    upstream = torch.randn(*shape, generator=gen, dtype=torch.float64).to(DEV)
    reference = lambda a, b: rms_norm_reference(a, b, 1e-6)  # noqa: E731
    check_every_path("rms_norm", lambda a, b, backend: rms_norm(a, b, 1e-6, backend=backend), reference,
                     [x, w], upstream, dtype, rms_norm_paths(dtype))
    exact = rms_norm_reference(x.double(), w.double(), 1e-6)
    check_reference_bound("rms_norm reference", rms_norm_reference(x, w, 1e-6), exact, dtype)


@needs_native
def test_rms_norm_cpp_splits_rows_over_threads():
    """Enough rows for 3 threads (uneven ranges): each range's weight-gradient share is summed once."""
    gen = torch.Generator().manual_seed(5)
    x, w = torch.randn(601, 256, generator=gen), 1 + 0.5 * torch.randn(256, generator=gen)
    upstream = torch.randn(601, 256, generator=gen, dtype=torch.float64)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        op = lambda a, b, backend: rms_norm(a, b, 1e-6, backend=backend)  # noqa: E731
        reference = lambda a, b: rms_norm_reference(a, b, 1e-6)  # noqa: E731
        check_every_path("rms_norm, 3 threads", op, reference, [x, w], upstream, torch.float32, ["cpp"])
    finally:
        torch.set_num_threads(before)


def test_rms_norm_picks_its_path_and_says_why_it_cannot():
    x, w = torch.zeros(2, 3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    assert torch.equal(rms_norm(x, w, 1e-6), rms_norm_reference(x, w, 1e-6))  # float64: torch
    with pytest.raises(ValueError, match="backend='cpp' needs float32 CPU tensors"):
        rms_norm(x, w, 1e-6, backend="cpp")
    with pytest.raises(ValueError, match="Triton kernel does not take"):
        rms_norm(x.float(), w.float(), 1e-6, backend="triton")
    with pytest.raises(ValueError, match=r"weight \(4,\) does not match"):
        rms_norm(torch.zeros(2, 3), torch.ones(4), 1e-6)


# ---- the C++ entries raise ValueError naming the argument ----

F32 = np.float32


@needs_native
def test_rms_norm_f32_checks_its_arguments():
    C = native()
    x, w, out = np.zeros((4, 8), F32), np.ones(8, F32), np.zeros((4, 8), F32)
    C.rms_norm_f32(x, None, w, 1e-6, out)
    with pytest.raises(ValueError, match="argument 'x' must be float32, got float64"):
        C.rms_norm_f32(x.astype(np.float64), None, w, 1e-6, out)
    with pytest.raises(ValueError, match=r"argument 'w' has shape \(9,\) but dimension 0 must be 8"):
        C.rms_norm_f32(x, None, np.ones(9, F32), 1e-6, out)
    with pytest.raises(ValueError, match=r"argument 'residual' has shape \(3, 8\)"):
        C.rms_norm_f32(x, np.zeros((3, 8), F32), w, 1e-6, out)
    with pytest.raises(ValueError, match="argument 'out' must be contiguous"):
        C.rms_norm_f32(x, None, w, 1e-6, np.zeros((8, 4), F32).T)
    with pytest.raises(ValueError, match="argument 'x' must have 2 dimensions"):
        C.rms_norm_f32(x.ravel(), None, w, 1e-6, out)
    readonly = out.copy()
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="argument 'out' must be writeable"):
        C.rms_norm_f32(x, None, w, 1e-6, readonly)


@needs_native
def test_rms_norm_train_entries_check_their_arguments():
    C = native()
    x, w, y, rstd = np.ones((5, 6), F32), np.ones(6, F32), np.zeros((5, 6), F32), np.zeros(5, F32)
    C.rms_norm_train_forward_f32(x, w, y, rstd, 1e-6)
    with pytest.raises(ValueError, match="argument 'x' must be float32, got float16"):
        C.rms_norm_train_forward_f32(x.astype(np.float16), w, y, rstd, 1e-6)
    with pytest.raises(ValueError, match=r"argument 'rstd' has shape \(4,\)"):
        C.rms_norm_train_forward_f32(x, w, y, np.zeros(4, F32), 1e-6)
    with pytest.raises(ValueError, match="argument 'x' must be contiguous"):
        C.rms_norm_train_forward_f32(np.ones((6, 5), F32).T, np.ones(5, F32), y.T.copy(), rstd, 1e-6)
    dx, dw = np.zeros((5, 6), F32), np.zeros(6, F32)
    C.rms_norm_train_backward_f32(y, x, w, rstd, dx, dw)
    with pytest.raises(ValueError, match=r"argument 'dy' has shape \(5, 7\)"):
        C.rms_norm_train_backward_f32(np.zeros((5, 7), F32), x, w, rstd, dx, dw)
    with pytest.raises(ValueError, match="argument 'dw' must be float32, got int64"):
        C.rms_norm_train_backward_f32(y, x, w, rstd, dx, np.zeros(6, np.int64))
    with pytest.raises(ValueError, match="argument 'dx' must be contiguous"):
        C.rms_norm_train_backward_f32(y, x, w, rstd, np.zeros((6, 5), F32).T, dw)
