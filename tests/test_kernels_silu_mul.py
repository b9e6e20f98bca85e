"""SwiGLU's product (kernels/silu_mul.py) on every path against a float64 oracle: the sampler's
silu_mul (Triton, interpreted on the CPU; torch) and training's swiglu (C++ and torch, forward and
both gradients), on odd shapes; the C++ entries' argument checks. Tolerance rule of
test_kernels_logprob; dtypes as in test_kernels_rms_norm."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reversalkit.kernels.silu_mul import silu_mul, silu_mul_reference, swiglu, swiglu_reference
from test_kernels_logprob import assert_within_torch_error
from test_kernels_rms_norm import DEV, DTYPES, check_every_path, check_reference_bound, needs_native, paths

from reversalkit._ext import native


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,inter", [(1, 96), (5, 1000), (3, 2304), (6, 123)])
def test_silu_mul_every_path(dtype, T, inter):
    g = torch.Generator().manual_seed(inter)
    gu = (torch.randn(T, 2 * inter, generator=g) * 4).to(DEV, dtype)
    keep = gu.clone()
    want = silu_mul_reference(gu)
    gd = gu.double()
    exact = gd[:, :inter] * torch.sigmoid(gd[:, :inter]) * gd[:, inter:]
    check_reference_bound("silu_mul reference", want, exact, dtype)
    for path in paths(dtype, cpp=False):  # no C++ pass: the sampler's CPU product is torch's
        got = silu_mul(gu, backend=path)
        assert torch.equal(gu, keep)  # no path writes its input
        if path == "torch":
            assert torch.equal(got, want)
            assert torch.equal(silu_mul(gu.clone(), backend=path, overwrite=True), want)
        assert_within_torch_error(f"silu_mul {path}", got, want, exact, dtype)


def test_silu_mul_has_no_cpp_path():
    with pytest.raises(ValueError, match="backend='cpp' needs"):
        silu_mul(torch.zeros(2, 4), backend="cpp")
    with pytest.raises(ValueError, match=r"gu must be \(T, 2I\)"):
        silu_mul(torch.zeros(2, 5))


SHAPES = [(1, 5), (7, 128), (333, 130), (2, 9, 1000)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_swiglu_every_path_and_gradient(shape, dtype):
    gen = torch.Generator().manual_seed(sum(shape) + 1)
    gate = torch.randn(*shape, generator=gen) * 4
    gate.view(-1)[:3] = torch.tensor([-100.0, 100.0, 0.0])[: gate.numel()]  # saturated sigmoid, and zero
    up = torch.randn(*shape, generator=gen)
    upstream = torch.randn(*shape, generator=gen, dtype=torch.float64).to(DEV)
    gate, up = gate.to(DEV, dtype), up.to(DEV, dtype)
    op_paths = [p for p in paths(dtype) if p != "triton"]  # no Triton kernel for training's swiglu
    check_every_path("swiglu", swiglu, swiglu_reference, [gate, up], upstream, dtype, op_paths)


@needs_native
def test_swiglu_cpp_splits_over_threads():
    gen = torch.Generator().manual_seed(5)
    gate, up = torch.randn(601, 256, generator=gen), torch.randn(601, 256, generator=gen)
    upstream = torch.randn(601, 256, generator=gen, dtype=torch.float64)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        check_every_path("swiglu, 3 threads", swiglu, swiglu_reference, [gate, up], upstream, torch.float32,
                         ["cpp"])
    finally:
        torch.set_num_threads(before)


def test_swiglu_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"gate \(2, 3\) and up \(2, 4\)"):
        swiglu(torch.zeros(2, 3), torch.zeros(2, 4))


@needs_native
def test_swiglu_entries_check_their_arguments():
    C = native()
    g, u, y = np.ones(7, np.float32), np.ones(7, np.float32), np.zeros(7, np.float32)
    C.swiglu_forward_f32(g, u, y)
    with pytest.raises(ValueError, match="argument 'u' must be float32, got float64"):
        C.swiglu_forward_f32(g, u.astype(np.float64), y)
    with pytest.raises(ValueError, match=r"argument 'y' has shape \(6,\) but dimension 0 must be 7"):
        C.swiglu_forward_f32(g, u, np.zeros(6, np.float32))
    with pytest.raises(ValueError, match="argument 'g' must be contiguous"):
        C.swiglu_forward_f32(np.ones(14, np.float32)[::2], u, y)
    with pytest.raises(ValueError, match="argument 'g' must have 1 dimensions"):
        C.swiglu_forward_f32(g.reshape(1, 7), u, y)
    dg, du = np.zeros(7, np.float32), np.zeros(7, np.float32)
    C.swiglu_backward_f32(y, g, u, dg, du)
    with pytest.raises(ValueError, match=r"argument 'dy' has shape \(8,\)"):
        C.swiglu_backward_f32(np.zeros(8, np.float32), g, u, dg, du)
    readonly = du.copy()
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="argument 'du' must be writeable"):
        C.swiglu_backward_f32(y, g, u, dg, readonly)
