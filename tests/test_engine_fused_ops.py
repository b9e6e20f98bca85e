"""The decode step's Triton elementwise kernels (engine/fused_ops.py) against a float64 reference,
beside torch's own forms, and the engine with them switched on (CPU: Triton's interpreter, set up
by conftest.py).

Rule, as for the log-prob kernels: kernel error <= 2x torch's error in that dtype (plus a floor of
half an ulp of the result's scale). The dtypes are fp32 and fp16, plus bf16 where CUDA runs the
kernels: Triton's interpreter converts fp32 -> bf16 by truncation where CUDA and torch round to
nearest, so bf16 results on the CPU say nothing about the kernels (fp16 converts correctly there,
through the same code)."""

import pytest
import torch
from test_engine_model import hf_greedy, make, prompts

from reversalkit.engine import Engine, SamplingParams
from reversalkit.engine import fused_ops as fo

DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if torch.cuda.is_available() else [])
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def as_accurate_as_torch(kernel: torch.Tensor, native: torch.Tensor, exact: torch.Tensor):
    assert kernel.dtype == native.dtype and kernel.shape == native.shape == exact.shape
    e_k = (kernel.double() - exact).abs().max().item()
    e_t = (native.double() - exact).abs().max().item()
    floor = 0.5 * torch.finfo(kernel.dtype).eps * exact.abs().max().item()
    assert e_k <= 2 * e_t + floor, f"kernel error {e_k:.3g} vs torch {e_t:.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,N", [(1, 64), (7, 200), (33, 2048)])
@pytest.mark.parametrize("residual", [False, True])
def test_add_rms_norm(dtype, T, N, residual):
    g = torch.Generator().manual_seed(T * N)
    x = (torch.randn(T, N, generator=g) * 3).to(DEV, dtype)
    r = torch.randn(T, N, generator=g).to(DEV, dtype) if residual else None
    w = (1 + torch.randn(N, generator=g)).to(DEV, dtype)
    x_k, x_t = x.clone(), x.clone()
    got = fo.add_rms_norm(x_k, w, 1e-6, r)
    want = fo.add_rms_norm_reference(x_t, w, 1e-6, r)
    assert torch.equal(x_k, x_t)  # the residual stream, updated in place with torch's rounding
    xs = x_t.double()
    exact = xs / (xs.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt() * w.double()
    as_accurate_as_torch(got, want, exact)
    if not residual:
        assert torch.equal(x_k, x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,inter", [(1, 96), (5, 1000), (3, 2304)])
def test_silu_mul(dtype, T, inter):
    g = torch.Generator().manual_seed(inter)
    gu = (torch.randn(T, 2 * inter, generator=g) * 4).to(DEV, dtype)
    keep = gu.clone()
    got, want = fo.silu_mul(gu), fo.silu_mul_reference(gu)
    assert torch.equal(gu, keep)  # neither form writes its input
    gd = gu.double()
    as_accurate_as_torch(got, want, gd[:, :inter] * torch.sigmoid(gd[:, :inter]) * gd[:, inter:])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,n,D", [(1, 3, 16), (9, 12, 64), (4, 20, 128)])
def test_rope(dtype, T, n, D):
    g = torch.Generator().manual_seed(T + n + D)
    qkv = torch.randn(T, (n + 4) * D, generator=g).to(DEV, dtype)  # extra columns: the v heads, not rotated
    pos = torch.randint(0, 50, (T,), generator=g).to(DEV)
    cos = torch.randn(50, D, generator=g).to(DEV, dtype)
    sin = torch.randn(50, D, generator=g).to(DEV, dtype)
    exact = fo.rope_reference(qkv.double(), pos, cos.double(), sin.double(), n, D)
    native = fo.rope_reference(qkv, pos, cos, sin, n, D)
    as_accurate_as_torch(fo.rope(qkv, pos, cos, sin, n, D), native, exact)


def test_rope_rejects_odd_head_dim():
    with pytest.raises(ValueError, match="power-of-two head_dim"):
        table = torch.zeros(4, 24)
        fo.rope(torch.zeros(1, 3 * 24), torch.zeros(1, dtype=torch.int64), table, table, 2, 24)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU interpreter run; on CUDA the fused ops are the "
                    "default and benchmarks/gpu_engine.py checks greedy output against HF")
@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_engine_with_fused_ops_equals_hf_greedy(kind):
    """The model's CUDA path (fused RMSNorm, SwiGLU and RoPE), run on the CPU in fp32."""
    model = make(kind)
    engine = Engine(model, None, block_size=4, decode_backend="reference")
    assert not engine.model.fused_ops  # CPU default: the torch forms
    engine.model.fused_ops = True
    ps = prompts()[:3]
    outs = engine.generate(ps, SamplingParams(temperature=0, max_new_tokens=12), progress=False)
    for p, o in zip(ps, outs):
        assert o[0].token_ids == hf_greedy(model, p, 12)
