"""Seeded percentile-bootstrap confidence intervals for per-problem means.

Resampling is over problems (the unit the study samples), with a `numpy.random.Generator` seeded
from `seed`, so the same inputs and seed always give the same interval.

    from reversalkit.metrics import bootstrap_ci, paired_bootstrap_ci
    bootstrap_ci(per_problem_pass1, seed=0)                 # BootstrapCI(mean, low, high, ...)
    paired_bootstrap_ci(pass1_mt, pass1_m1, seed=0)         # CI of the mean difference M_t - M1
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["BootstrapCI", "bootstrap_ci", "paired_bootstrap_ci"]

# Resampled index matrices are built in chunks of at most this many entries (8 bytes each), so
# memory stays bounded whatever the number of problems and resamples.
_CHUNK_ELEMENTS = 1 << 22


@dataclasses.dataclass(frozen=True)
class BootstrapCI:
    mean: float  # the statistic on the data itself
    low: float
    high: float
    confidence: float
    n_resamples: int
    n: int  # number of values (problems) used

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def _prepare(values, omit_nan: bool) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    nan = np.isnan(x)
    if nan.any():
        if not omit_nan:
            raise ValueError(f"{int(nan.sum())} NaN value(s) (skipped groups?); "
                             "drop them or pass omit_nan=True")
        x = x[~nan]
    if x.size == 0:
        raise ValueError("bootstrap needs at least one value, got none")
    return x


def bootstrap_ci(values, *, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0,
                 omit_nan: bool = False) -> BootstrapCI:
    """Percentile bootstrap CI of the mean of per-problem values, shape (P,).

    confidence in (0, 1); n_resamples >= 1; NaNs raise unless omit_nan=True drops them first.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    x = _prepare(values, omit_nan)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=np.float64)
    rows = max(1, _CHUNK_ELEMENTS // x.size)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))  # (rows, P)
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return BootstrapCI(float(x.mean()), float(low), float(high), confidence, n_resamples, int(x.size))


def paired_bootstrap_ci(a, b, *, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0,
                        omit_nan: bool = False) -> BootstrapCI:
    """CI of mean(a - b) for paired per-problem values a, b of shape (P,) (same problem order).

    Pairing keeps the per-problem difficulty out of the interval, so it is much tighter than two
    separate intervals. With omit_nan=True, pairs where either side is NaN are dropped.
    """
    a_arr = np.asarray(a, dtype=np.float64).ravel()
    b_arr = np.asarray(b, dtype=np.float64).ravel()
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"a and b must be paired per problem, got sizes {a_arr.size} and {b_arr.size}")
    return bootstrap_ci(a_arr - b_arr, confidence=confidence, n_resamples=n_resamples, seed=seed,
                        omit_nan=omit_nan)
