"""Accuracy metrics over sampled completions: unbiased pass@k, pass@k curves, answer coverage.

Inputs are per-problem sample counts: `n` samples drawn, `c` of them correct. `sample_counts`
turns per-problem lists of correctness flags into those counts.

    from reversalkit.metrics import pass_at_k, pass_at_k_curve, coverage
    pass_at_k(50, 7, 8)                   # one problem -> float
    pass_at_k([50, 50], [0, 50], 1)       # per problem -> ndarray([0., 1.])
    pass_at_k_curve([50, 50], [3, 20])    # {1: ..., 2: ..., ..., 32: ..., 50: ...}
    coverage([50, 50], [3, 20])           # mean fraction of correct samples
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["pass_at_k", "pass_at_k_curve", "default_ks", "coverage", "sample_counts"]


def _pass_at_k_scalar(n: int, c: int, k: int) -> float:
    # 1 - C(n-c, k) / C(n, k) as a product of min(c, k) factors, each in [0, 1]: no factorials,
    # no overflow for any n, and relative error ~ min(c, k) ulps (checked against Fractions).
    if n - c < k:
        return 1.0
    ratio = 1.0
    if c <= k:
        for j in range(n - c + 1, n + 1):  # prod_j (1 - k/j) over the last c sizes
            ratio *= 1.0 - k / j
    else:
        for i in range(k):  # prod_i (n-c-i) / (n-i)
            ratio *= (n - c - i) / (n - i)
    return 1.0 - ratio


def _as_int_array(name: str, value) -> np.ndarray:
    arr = np.asarray(value)
    numeric = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    if arr.dtype == np.bool_ or not numeric:
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must hold whole numbers, got {arr.ravel()[:5].tolist()}...")
        arr = arr.astype(np.int64)
    return arr.astype(np.int64, copy=False)


def pass_at_k(n, c, k):
    """Unbiased pass@k estimator 1 - C(n-c, k) / C(n, k) (Chen et al., 2021).

    n: samples drawn per problem; c: correct ones; k: the budget. Each is an int or an array of
    ints; arrays broadcast against each other. Returns a float for scalar inputs, else a float64
    ndarray of the broadcast shape. Exactly 1.0 when n - c < k, exactly 0.0 when c == 0.
    Raises ValueError when k < 1, c < 0, c > n or k > n.
    """
    scalar = all(np.ndim(v) == 0 for v in (n, c, k))
    n_arr, c_arr, k_arr = np.broadcast_arrays(
        _as_int_array("n", n), _as_int_array("c", c), _as_int_array("k", k))
    for bad, msg in (
        (k_arr < 1, "k must be >= 1"),
        (c_arr < 0, "c must be >= 0"),
        (c_arr > n_arr, "c (correct samples) must be <= n (samples drawn)"),
        (k_arr > n_arr, "k must be <= n: pass@k needs at least k samples per problem"),
    ):
        if np.any(bad):
            i = np.flatnonzero(bad.ravel())[0]
            raise ValueError(f"{msg}; got n={n_arr.ravel()[i]}, c={c_arr.ravel()[i]}, k={k_arr.ravel()[i]}")
    if scalar:
        return _pass_at_k_scalar(int(n_arr), int(c_arr), int(k_arr))
    # Per-problem arrays repeat few distinct (n, c, k) triples (c <= n, usually one n): compute
    # each triple once.
    triples = np.stack([n_arr.ravel(), c_arr.ravel(), k_arr.ravel()], axis=1)  # (P, 3)
    if triples.shape[0] == 0:
        return np.zeros(n_arr.shape, dtype=np.float64)
    uniq, inverse = np.unique(triples, axis=0, return_inverse=True)
    values = np.array([_pass_at_k_scalar(int(a), int(b), int(d)) for a, b, d in uniq], dtype=np.float64)
    return values[inverse.ravel()].reshape(n_arr.shape)


def default_ks(n: int) -> list[int]:
    """Budgets 1, 2, 4, ... below n, then n itself: the x-axis of a pass@k curve with n samples."""
    if n < 1:
        raise ValueError(f"need at least one sample per problem, got n={n}")
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def pass_at_k_curve(n, c, ks: Iterable[int] | None = None) -> dict[int, float]:
    """Mean pass@k over problems for each budget k.

    n, c: per-problem sample counts, shape (P,) (or scalars broadcast against each other).
    ks: budgets; default `default_ks(min(n))` = 1, 2, 4, ..., min(n). Every k must be <= min(n).
    Returns {k: mean over problems of pass_at_k(n, c, k)}; {} when there are no problems.
    """
    n_arr, c_arr = np.broadcast_arrays(_as_int_array("n", n), _as_int_array("c", c))
    n_arr, c_arr = n_arr.ravel(), c_arr.ravel()
    if n_arr.size == 0:
        return {}
    ks = default_ks(int(n_arr.min())) if ks is None else [int(k) for k in ks]
    return {k: float(np.mean(pass_at_k(n_arr, c_arr, k))) for k in ks}


def coverage(n, c) -> float:
    """Correct-answer coverage: the mean over problems of c / n (fraction of correct samples).

    n, c: per-problem sample counts, shape (P,). Every n must be >= 1 and 0 <= c <= n. The paper
    reads coverage of M1 on the train set: above 0.5 favoured Iterative DPO / SFT-DPO.
    """
    n_arr, c_arr = np.broadcast_arrays(_as_int_array("n", n), _as_int_array("c", c))
    if n_arr.size == 0:
        raise ValueError("coverage needs at least one problem, got none")
    if np.any(n_arr < 1):
        raise ValueError(f"every problem needs n >= 1 samples, got n={int(n_arr.min())}")
    if np.any((c_arr < 0) | (c_arr > n_arr)):
        raise ValueError("c must lie in [0, n] for every problem")
    return float(np.mean(c_arr / n_arr))


def sample_counts(flags: Sequence[Sequence[bool]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-problem correctness flags -> (n, c): int64 arrays of shape (P,) (samples, correct)."""
    n = np.array([len(f) for f in flags], dtype=np.int64)
    c = np.array([int(sum(bool(x) for x in f)) for f in flags], dtype=np.int64)
    return n, c
