"""kernels/sample_top_p.py: every path (Triton under the interpreter, C++, torch) against the torch
reference, the reference against HF's nucleus distribution, the counter-based uniforms, the shared
sorting fallback, and the C++ entry's argument checks.

Paths agree token for token but for draws within float rounding of a CDF step (their sums run in
another order): a few in a million, so a few rows per test at most. The Triton interpreter takes
~20 ms per row program, so its batches are small.
"""

import numpy as np
import pytest
import torch
from reversalkit.kernels.sample_top_p import (
    as_int64,
    counter_uniforms,
    filter_logits,
    inverse_cdf,
    sample_top_p,
    sample_top_p_reference,
)

from reversalkit._ext import native

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _rows(B: int, V: int, seed: int, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, V, generator=g) * torch.linspace(0.05, 6.0, B)[:, None]  # flat to peaked rows
    keys = torch.randint(-2**62, 2**62, (B,), generator=g)
    ctr = torch.randint(0, 500, (B,), generator=g)
    return logits.to(device), keys.to(device), ctr.to(device)


def _need_cpp():
    assert native() is not None and hasattr(native(), "sample_rows_f32"), "build reversalkit._C"


def test_counter_uniforms_match_splitmix_reference():
    def ref(key, ctr):
        m = (1 << 64) - 1
        x = (key + ctr * 0x9E3779B97F4A7C15) & m
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
        x ^= x >> 31
        return ((x >> 11) + 0.5) * 2.0 ** -53

    rng = np.random.default_rng(0)
    keys = [int(k) for k in rng.integers(0, 2**63, 50)] + [2**64 - 1, 0]
    ctrs = [int(c) for c in rng.integers(0, 10**6, len(keys))]
    got = counter_uniforms(torch.tensor([as_int64(k) for k in keys]), torch.tensor(ctrs))
    assert got.tolist() == [ref(k, c) for k, c in zip(keys, ctrs)]


def test_counter_uniforms_lie_inside_the_unit_interval():
    u = counter_uniforms(torch.zeros(10000, dtype=torch.int64), torch.arange(10000))
    assert 0 < u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01


def test_inverse_cdf_never_picks_zero_probability_tokens():
    w = torch.tensor([[1.0, 0.0, 1.0, 0.0]]).expand(4, -1)
    tok = inverse_cdf(w, torch.tensor([1e-16, 0.5, 0.5 + 1e-12, 1 - 1e-16], dtype=torch.float64))
    assert set(tok.tolist()) <= {0, 2}


def _frequencies(path: str, x: torch.Tensor, top_p: float, rounds: int, N: int = 40000) -> torch.Tensor:
    keys = torch.arange(N, dtype=torch.int64) * 7919 + 3
    ctr = torch.full((N,), 5, dtype=torch.int64)
    tok = sample_top_p(x.expand(N, -1).contiguous(), 1.0, top_p, keys, ctr, max_rounds=rounds, backend=path)
    return torch.bincount(tok, minlength=x.shape[-1]).double() / N


@pytest.mark.parametrize("path", ["torch", "cpp"])
@pytest.mark.parametrize("scale", [0.05, 1.0, 4.0])  # flat, moderate, peaked distributions
def test_draws_follow_the_nucleus_distribution(path, scale):
    """Rejection (8 rounds) and the sorting fallback alone (0 rounds) both sample HF's nucleus."""
    if path == "cpp":
        _need_cpp()
    x = torch.randn(2, 37, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * scale
    for top_p in (0.8, 1.0):
        expected = filter_logits(x, 1.0, 0, top_p).softmax(-1)
        for rounds in (8, 0):
            for r in range(2):
                freq = _frequencies(path, x[r:r + 1].float(), top_p, rounds)
                assert (freq[expected[r] == 0] == 0).all()
                assert (freq - expected[r]).abs().max() < 5 * (0.25 / 40000) ** 0.5  # 5 sigma


@pytest.mark.parametrize("top_p", [0.9, 1.0])
def test_cpp_draws_the_references_tokens(top_p):
    _need_cpp()
    B, V, T = 3000, 1003, 0.7  # V not a multiple of the C++ sampler's 16-token blocks
    logits, keys, ctr = _rows(B, V, seed=1)
    want = sample_top_p_reference(logits, T, top_p, keys, ctr)
    got = sample_top_p(logits, T, top_p, keys, ctr, backend="cpp")
    assert (got != want).sum() <= 2
    assert torch.equal(sample_top_p(logits, T, top_p, keys, ctr), got)  # "auto" on float32 CPU logits
    torch.set_num_threads(2)  # rows split over threads: the same tokens
    assert torch.equal(sample_top_p(logits, T, top_p, keys, ctr, backend="cpp"), got)
    torch.set_num_threads(1)


def test_cpp_reads_strided_rows():
    _need_cpp()
    wide, keys, ctr = _rows(500, 700, seed=2)
    view = wide[:, :333]  # rows of a wider buffer
    want = sample_top_p_reference(view, 0.8, 0.9, keys, ctr)
    assert (sample_top_p(view, 0.8, 0.9, keys, ctr, backend="cpp") != want).sum() <= 1


@pytest.mark.parametrize("path", ["cpp", "triton"])
def test_rejected_rows_take_the_shared_sorting_fallback(path):
    """max_rounds=0: every row is rejected by the kernel and gets the reference's fallback draw."""
    if path == "cpp":
        _need_cpp()
    logits, keys, ctr = _rows(24, 300, seed=3, device=DEV if path == "triton" else "cpu")
    got = sample_top_p(logits, 1.3, 0.6, keys, ctr, max_rounds=0, backend=path, block=128)
    assert torch.equal(got, sample_top_p_reference(logits, 1.3, 0.6, keys, ctr, max_rounds=0))


@pytest.mark.parametrize("top_p, dtype", [(0.9, torch.float32), (0.5, torch.float32), (1.0, torch.float32),
                                          (0.9, torch.float16)])
def test_triton_draws_the_references_tokens(top_p, dtype):
    """Every token also lies in HF's nucleus."""
    T = 0.7
    logits, keys, ctr = _rows(96, 1003, seed=int(top_p * 10), device=DEV)  # 3 full tiles of 256 + a partial
    logits = logits.to(dtype)
    got = sample_top_p(logits, T, top_p, keys, ctr, backend="triton", block=256)
    assert (got != sample_top_p_reference(logits, T, top_p, keys, ctr)).sum() <= 1
    nucleus = torch.isfinite(filter_logits(logits, T, 0, top_p))
    assert nucleus.gather(1, got[:, None]).all()


def test_triton_strided_rows_and_single_tile():
    wide, keys, ctr = _rows(16, 700, seed=4, device=DEV)
    view = wide[:, :333]  # rows of a wider buffer, one 512-wide tile
    want = sample_top_p_reference(view, 1.0, 0.95, keys, ctr)
    assert (sample_top_p(view, 1.0, 0.95, keys, ctr, backend="triton") != want).sum() <= 1
    tiny = view[:, :5]
    assert torch.equal(sample_top_p(tiny, 1.0, 1.0, keys, ctr, backend="triton"),
                       sample_top_p_reference(tiny, 1.0, 1.0, keys, ctr))
    assert sample_top_p(view[:0], 1.0, 0.9, keys[:0], ctr[:0], backend="triton").shape == (0,)


def test_top_k_is_the_warpers_then_one_draw():
    logits, keys, ctr = _rows(64, 50, seed=5)
    got = sample_top_p(logits, 0.9, 0.8, keys, ctr, top_k=7)
    kept = torch.isfinite(filter_logits(logits, 0.9, 7, 0.8))
    assert kept.sum(-1).max() <= 7 and kept.gather(1, got[:, None]).all()
    warped = filter_logits(logits, 0.9, 7, 0.8).softmax(-1)
    assert torch.equal(got, inverse_cdf(warped, counter_uniforms(keys, ctr)))
    with pytest.raises(ValueError, match="top_k"):
        sample_top_p(logits, 0.9, 0.8, keys, ctr, top_k=7, backend="cpp")


def test_bad_arguments_raise():
    logits, keys, ctr = _rows(4, 50, seed=6)
    with pytest.raises(ValueError, match="top_p"):
        sample_top_p(logits, 1.0, 0.0, keys, ctr)
    with pytest.raises(ValueError, match="shapes"):
        sample_top_p(logits, 1.0, 0.9, keys[:3], ctr)
    with pytest.raises(ValueError, match="contiguous rows"):
        sample_top_p(logits.t().contiguous().t(), 1.0, 0.9, keys, ctr, backend="triton")
    with pytest.raises(ValueError, match="backend=.cpp. needs float32 CPU tensors"):
        sample_top_p(logits.double(), 1.0, 0.9, keys, ctr, backend="cpp")
    with pytest.raises(ValueError, match="backend"):
        sample_top_p(logits, 1.0, 0.9, keys, ctr, backend="cuda")


@pytest.mark.parametrize("arg, bad, message", [
    ("logits", lambda a: a["logits"].astype(np.float64), "'logits' must be float32"),
    ("logits", lambda a: a["logits"][0], "'logits' must have 2 dimensions"),
    ("logits", lambda a: a["logits"].T, "'logits' must be dense in its last dimension"),
    ("keys", lambda a: a["keys"].astype(np.int32), "'keys' must be int64"),
    ("keys", lambda a: a["keys"][:3], "'keys' has shape \\(3,\\) but dimension 0 must be 4"),
    ("counters", lambda a: a["counters"][::2], "'counters' has shape"),
    ("counters", lambda a: np.repeat(a["counters"], 2)[::2], "'counters' must be contiguous"),
    ("out", lambda a: a["out"][:1], "'out' has shape"),
    ("out", lambda a: np.broadcast_to(a["out"][:1], (4,)), "'out' must be"),
])
def test_cpp_entry_names_the_bad_argument(arg, bad, message):
    """A wrong call raises ValueError naming the argument, before any pointer is read."""
    _need_cpp()
    logits, keys, ctr = _rows(4, 50, seed=7)
    args = dict(logits=logits.numpy(), keys=keys.numpy(), counters=ctr.numpy(),
                out=np.empty(4, dtype=np.int64))
    args[arg] = bad(args)
    with pytest.raises(ValueError, match=message):
        native().sample_rows_f32(args["logits"], args["keys"], args["counters"], args["out"], 1.0, 0.9, 8)
    with pytest.raises(ValueError, match="'top_p' must lie in"):
        native().sample_rows_f32(logits.numpy(), keys.numpy(), ctr.numpy(), np.empty(4, dtype=np.int64),
                                 1.0, 1.5, 8)
