"""pass@k, pass@k curves, coverage, transitions and bootstrap CIs against independent references.

The pass@k reference is exact rational arithmetic (math.comb + fractions.Fraction).
"""

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reversalkit.metrics import bootstrap as bootstrap_mod
from reversalkit.metrics import (
    bootstrap_ci,
    coverage,
    default_ks,
    paired_bootstrap_ci,
    pass_at_k,
    pass_at_k_curve,
    pass_at_k_on,
    sample_counts,
    transitions,
)


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


# ---------------------------------------------------------------- pass@k


def test_pass_at_k_matches_exact_fractions_for_all_small_cases():
    for n in range(1, 31):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert abs(pass_at_k(n, c, k) - float(exact_pass_at_k(n, c, k))) <= 1e-14, (n, c, k)


@pytest.mark.parametrize("n,c,k", [(10_000, 37, 100), (10_000, 9_000, 5_000), (10_000, 1, 10_000),
                                   (10_000, 5_000, 5_000), (9_999, 4_321, 17), (10_000, 9_999, 1)])
def test_pass_at_k_large_n_no_overflow(n, c, k):
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        got = pass_at_k(n, c, k)
    assert math.isfinite(got)
    assert abs(got - float(exact_pass_at_k(n, c, k))) <= 1e-12


def test_pass_at_k_edge_cases():
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 0, 5) == 0.0  # c = 0
    assert pass_at_k(5, 5, 1) == 1.0 and pass_at_k(5, 5, 5) == 1.0  # c = n
    assert pass_at_k(5, 1, 5) == 1.0  # n = k with one correct sample
    assert pass_at_k(5, 3, 3) == 1.0  # n - c < k
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(50, 7, 1) == pytest.approx(7 / 50, abs=1e-15)  # pass@1 = c / n


def test_pass_at_k_scalar_and_array_types():
    assert type(pass_at_k(10, 3, 2)) is float
    assert type(pass_at_k(np.int64(10), np.int32(3), 2)) is float
    out = pass_at_k(np.array([[10], [20]]), np.array([0, 3, 10]), np.array(2))  # broadcast (2, 3)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3) and out.dtype == np.float64
    for i, n in enumerate([10, 20]):
        for j, c in enumerate([0, 3, 10]):
            assert out[i, j] == pass_at_k(n, c, 2)
    assert pass_at_k([50, 50], [0, 50], 1).tolist() == [0.0, 1.0]
    assert pass_at_k(np.zeros(0, dtype=int), np.zeros(0, dtype=int), 1).shape == (0,)
    assert pass_at_k(np.array([10.0]), np.array([3.0]), 2)[0] == pass_at_k(10, 3, 2)  # whole floats ok


@pytest.mark.parametrize("n,c,k,msg", [
    (5, 2, 6, "k must be <= n"), (5, 6, 1, "c .* <= n"), (5, 2, 0, "k must be >= 1"),
    (5, -1, 1, "c must be >= 0"), ([5, 5], [1, 7], 1, "c .* <= n"), (5, 2.5, 1, "whole numbers"),
    (np.array([True]), 1, 1, "integers"),
])
def test_pass_at_k_errors(n, c, k, msg):
    with pytest.raises(ValueError, match=msg):
        pass_at_k(n, c, k)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_property_exact_and_monotone(nck):
    n, c, k = nck
    p = pass_at_k(n, c, k)
    assert 0.0 <= p <= 1.0
    assert abs(p - float(exact_pass_at_k(n, c, k))) <= 1e-13
    if k < n:
        assert pass_at_k(n, c, k + 1) >= p - 1e-15
    if c < n:
        assert pass_at_k(n, c + 1, k) >= p - 1e-15


def test_pass_at_k_curve_defaults_and_values():
    assert default_ks(50) == [1, 2, 4, 8, 16, 32, 50]
    assert default_ks(1) == [1] and default_ks(8) == [1, 2, 4, 8]
    n, c = [50, 50, 60], [3, 20, 0]
    curve = pass_at_k_curve(n, c)
    assert list(curve) == default_ks(50)
    for k, v in curve.items():
        assert v == pytest.approx(np.mean([float(exact_pass_at_k(a, b, k)) for a, b in zip(n, c)]), abs=1e-14)
    expected3 = np.mean([pass_at_k(a, b, 3) for a, b in zip(n, c)])
    assert pass_at_k_curve(n, c, ks=[3]) == {3: pytest.approx(expected3)}
    assert pass_at_k_curve([], []) == {}
    with pytest.raises(ValueError, match="k must be <= n"):
        pass_at_k_curve(n, c, ks=[55])


def test_coverage_and_sample_counts():
    flags = [[True, False, False, True], [False] * 3, [True]]
    n, c = sample_counts(flags)
    assert n.tolist() == [4, 3, 1] and c.tolist() == [2, 0, 1]
    assert coverage(n, c) == pytest.approx((0.5 + 0.0 + 1.0) / 3, abs=1e-15)
    with pytest.raises(ValueError, match="n >= 1"):
        coverage([0, 2], [0, 1])
    with pytest.raises(ValueError, match="at least one problem"):
        coverage([], [])
    with pytest.raises(ValueError, match=r"\[0, n\]"):
        coverage([2], [3])


# ---------------------------------------------------------------- transitions


def test_transitions_sets_and_accuracies():
    base = {"a": False, "b": True, "c": True, "d": False, 7: False}
    cur = {"a": True, "b": False, "c": True, "d": False, 7: np.bool_(True)}
    t = transitions(base, cur)
    assert t.improved == {"a", 7} and t.regressed == {"b"}
    assert t.stable_correct == {"c"} and t.stable_wrong == {"d"}
    assert t.num_problems == 5
    assert t.base_accuracy == 2 / 5 and t.current_accuracy == 3 / 5
    assert t.summary()["improved"] == 2
    empty = transitions({}, {})
    assert empty.num_problems == 0 and math.isnan(empty.base_accuracy)


def test_transitions_errors():
    with pytest.raises(ValueError, match="same problems"):
        transitions({"a": True, "b": True}, {"a": True, "c": False})
    with pytest.raises(ValueError, match="must be a bool"):
        transitions({"a": None}, {"a": True})


def test_improved_pass_at_k_matches_manual_mean():
    base = {i: i % 3 == 0 for i in range(12)}
    cur = {i: i % 2 == 0 for i in range(12)}
    counts = {i: (16, i) for i in range(12)}
    t = transitions(base, cur)
    assert t.improved == {2, 4, 8, 10}
    got = t.improved_pass_at_k(counts)
    assert list(got) == [1, 2, 4, 8, 16]
    for k, v in got.items():
        assert v == pytest.approx(np.mean([float(exact_pass_at_k(16, i, k)) for i in t.improved]), abs=1e-14)
    assert t.regressed_pass_at_k(counts, ks=[2]) == {2: pytest.approx(
        np.mean([pass_at_k(16, i, 2) for i in t.regressed]))}
    assert transitions({1: True}, {1: True}).improved_pass_at_k({}) == {}
    with pytest.raises(ValueError, match="no sample counts"):
        t.improved_pass_at_k({2: (16, 1)})
    assert pass_at_k_on([0, 3], counts, ks=[1]) == {1: pytest.approx((0 / 16 + 3 / 16) / 2)}


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_seeded_and_matches_reference_resampling():
    x = np.random.default_rng(1).random(37)
    ci = bootstrap_ci(x, n_resamples=2000, seed=5)
    assert ci == bootstrap_ci(x, n_resamples=2000, seed=5)
    assert ci != bootstrap_ci(x, n_resamples=2000, seed=6)
    rng = np.random.default_rng(5)  # one chunk at this size: the same stream, resampled plainly
    means = x[rng.integers(0, x.size, size=(2000, x.size))].mean(axis=1)
    alpha = (1 - 0.95) / 2
    assert (ci.low, ci.high) == tuple(np.quantile(means, [alpha, 1 - alpha]))
    assert ci.mean == pytest.approx(x.mean()) and ci.low < ci.mean < ci.high and ci.n == 37


def test_bootstrap_chunking_keeps_results_deterministic(monkeypatch):
    x = np.random.default_rng(2).random(50)
    monkeypatch.setattr(bootstrap_mod, "_CHUNK_ELEMENTS", 50 * 7)  # 7 resamples per chunk
    a = bootstrap_ci(x, n_resamples=100, seed=0)
    assert a == bootstrap_ci(x, n_resamples=100, seed=0) and a.low < a.high


def test_bootstrap_width_matches_normal_theory():
    x = np.random.default_rng(3).normal(size=400)
    ci = bootstrap_ci(x, n_resamples=4000, seed=0)
    expected = 2 * 1.959964 * x.std() / math.sqrt(x.size)
    assert abs((ci.high - ci.low) - expected) < 0.1 * expected


def test_bootstrap_edge_cases_and_paired():
    assert bootstrap_ci([0.25] * 5).low == 0.25 and bootstrap_ci([0.25]).high == 0.25
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])
    assert bootstrap_ci([1.0, float("nan"), 3.0], omit_nan=True).n == 2
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0], confidence=1.5)
    a = np.random.default_rng(4).random(30)
    d = paired_bootstrap_ci(a + 0.1, a, seed=1)
    assert d.mean == pytest.approx(0.1) and d.low == pytest.approx(0.1) and d.high == pytest.approx(0.1)
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap_ci([1.0, 2.0], [1.0])


def test_pass_at_k_on_is_independent_of_id_order():
    """Sets of string ids iterate in hash order, which changes between processes; the float mean
    must not (a resumed study recomputes some of these in another process)."""
    rng = np.random.default_rng(0)
    ids = [f"test/{i}" for i in range(40)]
    counts = {pid: (8, int(rng.integers(0, 9))) for pid in ids}
    want = pass_at_k_on(ids, counts, [1, 2, 4, 8])
    orders = [ids[::-1]] + [list(rng.permutation(ids)) for _ in range(20)]
    per_id = {p: float(pass_at_k(np.array([8]), np.array([counts[p][1]]), 2)[0]) for p in ids}
    plain = {float(np.mean([per_id[p] for p in o])) for o in orders}
    assert len(plain) > 1  # the order does move an unsorted float mean here
    for order in orders:
        assert pass_at_k_on(order, counts, [1, 2, 4, 8]) == want
