"""RoPE (kernels/rope.py) on every path (Triton, interpreted on the CPU; C++; torch) against a
float64 oracle on odd shapes, the C++ pass bitwise equal to torch's, and the C++ entry's argument
checks. Tolerance rule of test_kernels_logprob; dtypes as in test_kernels_rms_norm."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reversalkit.kernels.rope import rope, rope_fn, rope_reference
from test_kernels_logprob import assert_within_torch_error
from test_kernels_rms_norm import DEV, DTYPES, check_reference_bound, needs_native, paths

from reversalkit._ext import native

SHAPES = [(1, 3, 16), (9, 12, 64), (4, 20, 128), (7, 5, 24)]  # (T, n heads, D); D = 24: no Triton path


def inputs(T, n, D, dtype, P=50):
    g = torch.Generator().manual_seed(T + n + D)
    qkv = torch.randn(T, (n + 4) * D, generator=g).to(DEV, dtype)  # extra columns: the v heads, not rotated
    pos = torch.randint(0, P, (T,), generator=g).to(DEV)
    cos = torch.randn(P, D, generator=g).to(DEV, dtype)
    sin = torch.randn(P, D, generator=g).to(DEV, dtype)
    return qkv, pos, cos, sin


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,n,D", SHAPES)
def test_rope_every_path(dtype, T, n, D):
    qkv, pos, cos, sin = inputs(T, n, D, dtype)
    exact = rope_reference(qkv.double(), pos, cos.double(), sin.double(), n)
    want = rope_reference(qkv, pos, cos, sin, n)
    # two products and a sum, each rounded once
    check_reference_bound("rope reference", want, exact, dtype)
    for path in paths(dtype):
        if path == "triton" and D & (D - 1):
            with pytest.raises(ValueError, match="Triton kernel does not take"):
                rope(qkv, pos, cos, sin, n, backend=path)
            continue
        got = rope(qkv, pos, cos, sin, n, backend=path)
        if path in ("torch", "cpp"):  # the C++ pass rounds as torch's ops do: greedy parity rests on it
            assert torch.equal(got, want), path
        assert_within_torch_error(f"rope {path}", got, want, exact, dtype)


@pytest.mark.parametrize("T,n,D", SHAPES[:2])
def test_rope_fn_is_rope_with_the_path_picked_once(T, n, D):
    """The model's form: tables bound once per forward, then one call per layer."""
    qkv, pos, cos, sin = inputs(T, n, D, torch.float32)
    for path in paths(torch.float32):
        bound = rope_fn(pos, cos, sin, backend=path)
        assert torch.equal(bound(qkv, n), rope(qkv, pos, cos, sin, n, backend=path)), path
        assert torch.equal(bound(qkv, n - 1), rope(qkv, pos, cos, sin, n - 1, backend=path)), path


@needs_native
def test_rope_cpp_reads_strided_rows():
    """Rows further apart than their width (a column slice of a wider tensor) are read in place."""
    qkv, pos, cos, sin = inputs(6, 3, 32, torch.float32)
    wide = torch.randn(6, qkv.shape[1] + 40)
    wide[:, 7:7 + qkv.shape[1]] = qkv
    view = wide[:, 7:7 + qkv.shape[1]]
    assert not view.is_contiguous()
    assert torch.equal(rope(view, pos, cos, sin, 3, backend="cpp"), rope_reference(qkv, pos, cos, sin, 3))


def test_rope_rejects_mismatched_shapes():
    qkv, pos, cos, sin = inputs(3, 2, 16, torch.float32)
    with pytest.raises(ValueError, match=r"qkv must be \(T, >= n \* D = 160\)"):
        rope(qkv, pos, cos, sin, 10)
    with pytest.raises(ValueError, match="D even"):
        rope(qkv, pos, cos[:, :15], sin[:, :15], 2)


@needs_native
def test_rope_f32_checks_its_arguments():
    C = native()
    T, heads, D, P = 3, 2, 8, 10
    x, pos = np.zeros((T, heads * D + 4), np.float32), np.arange(T, dtype=np.int64)
    cos, sin = np.ones((P, D), np.float32), np.ones((P, D), np.float32)
    out = np.zeros((T, heads, D), np.float32)
    C.rope_f32(x, pos, cos, sin, out)
    with pytest.raises(ValueError, match="argument 'positions' must be int64, got int32"):
        C.rope_f32(x, pos.astype(np.int32), cos, sin, out)
    with pytest.raises(ValueError, match=r"argument 'positions' must lie in \[0, 10\).*got 10"):
        C.rope_f32(x, np.array([0, 10, 1]), cos, sin, out)
    with pytest.raises(ValueError, match=r"argument 'x' has shape \(3, 12\) but rows must hold at least"):
        C.rope_f32(x[:, :12], pos, cos, sin, out)
    with pytest.raises(ValueError, match="argument 'x' must be dense in its last dimension"):
        C.rope_f32(np.zeros((T, 2 * (heads * D)), np.float32)[:, ::2], pos, cos, sin, out)
    with pytest.raises(ValueError, match=r"argument 'sin_signed' has shape \(10, 6\)"):
        C.rope_f32(x, pos, cos, np.ones((P, 6), np.float32), out)
    with pytest.raises(ValueError, match="argument 'cos' must be float32, got float64"):
        C.rope_f32(x, pos, cos.astype(np.float64), sin, out)
    with pytest.raises(ValueError, match="argument 'out' must be contiguous"):
        C.rope_f32(x, pos, cos, sin, np.zeros((D, heads, T), np.float32).transpose(2, 1, 0))
    with pytest.raises(ValueError, match="argument 'cos' must have an even head_dim"):
        C.rope_f32(x, pos, np.ones((P, 7), np.float32), np.ones((P, 7), np.float32), out)
