"""The GPU sampler (engine/triton_sampling.py) against the torch path it replaces on CUDA.

On CPU-only machines the kernel runs in Triton's interpreter (conftest.py), which takes ~20 ms per
row program, so the batches here are small; the torch path itself is checked against the nucleus
distribution in test_engine_sampling.py. test_triton_compile.py compiles the kernel for an H100.
"""

import pytest
import torch

from reversalkit.engine.sampling import Sampler, SamplingParams, process_logits, sample_top_p
from reversalkit.engine.triton_sampling import sample_top_p_triton

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _rows(B: int, V: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, V, generator=g) * torch.linspace(0.05, 6.0, B)[:, None]  # flat to peaked
    keys = torch.randint(-2**62, 2**62, (B,), generator=g)
    ctr = torch.randint(0, 500, (B,), generator=g)
    return logits.to(DEV), keys.to(DEV), ctr.to(DEV)


@pytest.mark.parametrize("top_p, dtype", [(0.9, torch.float32), (0.5, torch.float32), (1.0, torch.float32),
                                          (0.9, torch.float16)])
def test_triton_sampler_draws_the_torch_paths_tokens(top_p, dtype):
    """Same uniforms, same algorithm: equal tokens but for draws within float rounding of a CDF step
    (the running sums add in another order); every token lies in HF's nucleus."""
    T = 0.7
    logits, keys, ctr = _rows(96, 1003, seed=int(top_p * 10))  # V: three full tiles of 256 and a partial one
    logits = logits.to(dtype)
    got = sample_top_p_triton(logits, T, top_p, keys, ctr, block=256)
    want = Sampler(SamplingParams(temperature=T, top_p=top_p), use_native=False)(logits, keys, ctr)[0]
    assert (got != want).sum() <= 1
    nucleus = torch.isfinite(process_logits(logits, SamplingParams(temperature=T, top_p=top_p)))
    assert nucleus.gather(1, got[:, None]).all()


def test_rejected_rows_take_the_sorting_fallback():
    """max_rounds=0: every row is rejected in the kernel and gets the torch path's fallback draw."""
    logits, keys, ctr = _rows(24, 300, seed=3)
    got = sample_top_p_triton(logits, 1.3, 0.6, keys, ctr, max_rounds=0, block=128)
    assert torch.equal(got, sample_top_p(logits / 1.3, 0.6, keys, ctr, max_rounds=0))


def test_strided_rows_single_tile_and_bad_input():
    wide, keys, ctr = _rows(16, 700, seed=4)
    view = wide[:, :333]  # rows of a wider buffer
    want = Sampler(SamplingParams(temperature=1.0, top_p=0.95), use_native=False)(view, keys, ctr)[0]
    assert (sample_top_p_triton(view, 1.0, 0.95, keys, ctr) != want).sum() <= 1  # one 512-wide tile
    tiny = view[:, :5]
    assert torch.equal(sample_top_p_triton(tiny, 1.0, 1.0, keys, ctr),
                       Sampler(SamplingParams(temperature=1.0), use_native=False)(tiny, keys, ctr)[0])
    assert sample_top_p_triton(view[:0], 1.0, 0.9, keys[:0], ctr[:0]).shape == (0,)
    with pytest.raises(ValueError, match="contiguous rows"):
        sample_top_p_triton(wide.t(), 1.0, 0.9, keys, ctr)
    with pytest.raises(ValueError, match="top_p"):
        sample_top_p_triton(view, 1.0, 0.0, keys, ctr)


@pytest.mark.gpu
def test_engine_sampler_uses_the_kernel_on_cuda(monkeypatch):
    from reversalkit.engine import triton_sampling

    calls = []
    real = triton_sampling.sample_top_p_triton
    monkeypatch.setattr(triton_sampling, "sample_top_p_triton",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    logits, keys, ctr = _rows(64, 32000, seed=5)
    params = SamplingParams(temperature=0.75, top_p=0.95)
    got = Sampler(params)(logits.bfloat16(), keys, ctr)[0]
    want = Sampler(params, use_native=False)(logits.bfloat16(), keys, ctr)[0]
    assert calls == [1] and (got != want).sum() <= 1
