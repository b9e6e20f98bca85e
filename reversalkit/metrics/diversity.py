"""Diversity of sampled solutions within one group (e.g. the correct samples of one problem).

- Distinct n-grams: unique / total n-grams of whitespace tokens after lowercasing
  (`text.lower().split()`); n-grams never span two texts. Counting runs in C++
  (`reversalkit._C.ngram_counts`) with `ngram_counts_reference` as the pure-Python mirror.
- Sentence-BERT diversity: 1 - mean pairwise cosine similarity of sentence embeddings.
- Distinct equations: unique / total normalized equations (see `equations.py`).

Single-group functions return 0.0 where the metric is undefined (no n-grams, fewer than two texts,
no equations). The `*_groups` functions score many groups at once (one C++ call, one embedding
pass) and return `GroupScores`: NaN for a group that has fewer than `min_size` texts or where the
metric is undefined, and the mean over the remaining groups. The paper averages within-correct and
within-incorrect diversity over problems; pass those two lists of groups separately.

Distinct-n and distinct equations fall mechanically as a group grows (more texts repeat more
n-grams), so groups of different sizes are not comparable: `fixed_size_groups` keeps the groups
that have at least k texts and cuts each to its first k, and scores are taken on those.

    from reversalkit.metrics import distinct_ngrams_avg, distinct_ngrams_avg_groups
    distinct_ngrams_avg(["a b c", "a b d"])                  # one group -> float
    distinct_ngrams_avg_groups([correct_p1, correct_p2]).mean
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from reversalkit._ext import native

from .embeddings import embed_texts
from .equations import extract_equations

K = TypeVar("K", bound=Hashable)

__all__ = [
    "GroupScores", "fixed_size_groups", "ngram_counts", "ngram_counts_reference", "distinct_ngrams",
    "distinct_ngrams_avg",
    "distinct_ngrams_groups", "distinct_ngrams_avg_groups", "sbert_diversity", "sbert_diversity_groups",
    "distinct_equations", "distinct_equations_groups",
]


@dataclasses.dataclass(frozen=True)
class GroupScores:
    """Per-group values (G,) float64, NaN where a group was skipped, and their mean."""

    values: np.ndarray
    mean: float  # mean over scored groups; NaN when no group was scored

    @classmethod
    def from_values(cls, values) -> GroupScores:
        v = np.asarray(values, dtype=np.float64)
        scored = v[~np.isnan(v)]
        return cls(v, float(scored.mean()) if scored.size else float("nan"))

    @property
    def num_scored(self) -> int:
        return int(np.count_nonzero(~np.isnan(self.values)))

    def scored(self) -> np.ndarray:
        """The values of the scored groups, in order (for `bootstrap_ci`)."""
        return self.values[~np.isnan(self.values)]


def fixed_size_groups(groups: Mapping[K, Sequence[str]], size: int) -> dict[K, list[str]]:
    """The groups with at least `size` texts, each cut to its first `size` texts.

    Keys keep their order; smaller groups are dropped (not padded), so every group scored has the
    same size and distinct-n / distinct equations compare across groups and iterates. The caller
    decides what "first" means by the order it passes texts in (the study: sample index).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    out: dict[K, list[str]] = {}
    for key, texts in groups.items():
        texts = _check_groups([texts])[0]
        if len(texts) >= size:
            out[key] = texts[:size]
    return out


def _check_groups(groups) -> list[list[str]]:
    if isinstance(groups, str):
        raise TypeError("groups must be a sequence of groups of texts, got one str")
    out = []
    for g in groups:
        if isinstance(g, str):
            raise TypeError("each group must be a sequence of str, got a str (wrap it in a list)")
        out.append(list(g))
    return out


def ngram_counts_reference(groups: Sequence[Sequence[str]], max_n: int) -> np.ndarray:
    """Pure-Python mirror of `reversalkit._C.ngram_counts`: int64 (G, max_n, 2) = (unique, total)."""
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    groups = _check_groups(groups)
    out = np.zeros((len(groups), max_n, 2), dtype=np.int64)
    for g, texts in enumerate(groups):
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"texts must be str, got {type(t).__name__}")
        token_lists = [t.lower().split() for t in texts]
        for n in range(1, max_n + 1):
            seen: set[tuple[str, ...]] = set()
            total = 0
            for toks in token_lists:
                grams = list(zip(*(toks[i:] for i in range(n))))
                total += len(grams)
                seen.update(grams)
            if total == 0:
                break
            out[g, n - 1] = (len(seen), total)
    return out


def ngram_counts(groups: Sequence[Sequence[str]], max_n: int, *, backend: str = "auto",
                 num_threads: int | None = None) -> np.ndarray:
    """Distinct and total n-gram counts of orders 1..max_n per group: int64 (G, max_n, 2).

    backend: "native" (C++, error if not built), "python" (the reference), or "auto" (native when
    built). Both give identical counts on every input. num_threads: threads the C++ path spreads
    groups over (None: os.cpu_count()); the Python path is single-threaded.
    """
    if backend not in ("auto", "native", "python"):
        raise ValueError(f"backend must be 'auto', 'native' or 'python', got {backend!r}")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
    groups = _check_groups(groups)
    ext = native() if backend != "python" else None
    if ext is None:
        if backend == "native":
            raise RuntimeError("reversalkit._C is not built; reinstall with `pip install -e .`")
        return ngram_counts_reference(groups, max_n)
    return ext.ngram_counts(groups, int(max_n), int(num_threads or os.cpu_count() or 1))


def _distinct_from_counts(counts: np.ndarray, orders: Sequence[int]) -> np.ndarray:
    """counts (G, max_n, 2) -> (G,) mean over `orders` of unique/total, skipping empty orders."""
    sel = counts[:, [n - 1 for n in orders], :].astype(np.float64)  # (G, len(orders), 2)
    unique, total = sel[..., 0], sel[..., 1]
    ratio = np.divide(unique, total, out=np.full_like(unique, np.nan), where=total > 0)
    defined = total > 0
    sums = np.where(defined, ratio, 0.0).sum(axis=1)
    num = defined.sum(axis=1)
    return np.divide(sums, num, out=np.full(len(counts), np.nan), where=num > 0)


def distinct_ngrams(texts: Sequence[str], n: int) -> float:
    """Unique / total n-grams of order n over one group of texts; 0.0 when it has no n-gram."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    value = _distinct_from_counts(ngram_counts([texts], n), [n])[0]
    return 0.0 if np.isnan(value) else float(value)


def distinct_ngrams_avg(texts: Sequence[str], max_n: int = 5) -> float:
    """Mean of distinct-n over n = 1..max_n for one group.

    Orders with no n-gram at all (every text shorter than n tokens) are left out of the mean rather
    than counted as 0, so short texts are not scored as repetitive; 0.0 when there is no token.
    """
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    value = _distinct_from_counts(ngram_counts([texts], max_n), range(1, max_n + 1))[0]
    return 0.0 if np.isnan(value) else float(value)


def _skip_small(values: np.ndarray, groups: list[list[str]], min_size: int) -> GroupScores:
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    sizes = np.array([len(g) for g in groups], dtype=np.int64)
    return GroupScores.from_values(np.where(sizes >= min_size, values, np.nan))


def distinct_ngrams_groups(groups: Sequence[Sequence[str]], n: int, *, min_size: int = 1) -> GroupScores:
    """distinct_ngrams per group (one C++ call); NaN for groups with < min_size texts or no n-gram."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    groups = _check_groups(groups)
    return _skip_small(_distinct_from_counts(ngram_counts(groups, n), [n]), groups, min_size)


def distinct_ngrams_avg_groups(groups: Sequence[Sequence[str]], max_n: int = 5, *,
                               min_size: int = 1) -> GroupScores:
    """distinct_ngrams_avg per group (one C++ call); NaN for groups with < min_size texts or no token."""
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    groups = _check_groups(groups)
    values = _distinct_from_counts(ngram_counts(groups, max_n), range(1, max_n + 1))
    return _skip_small(values, groups, min_size)


def _mean_pairwise_cosine(emb: np.ndarray) -> float:
    """Mean cosine similarity over unordered pairs of rows of unit vectors emb (m, D), m >= 2."""
    e = emb.astype(np.float64)
    s = e.sum(axis=0)
    # sum_{i != j} e_i.e_j = |sum_i e_i|^2 - sum_i |e_i|^2: O(m D) instead of O(m^2 D).
    off_diag = float(s @ s) - float(np.einsum("ij,ij->", e, e))
    m = e.shape[0]
    return off_diag / (m * (m - 1))


def sbert_diversity_groups(groups: Sequence[Sequence[str]], model=None, *, device: str = "cpu",
                           batch_size: int = 64, min_size: int = 2) -> GroupScores:
    """1 - mean pairwise cosine similarity per group, all groups embedded in one pass.

    model: None (all-MiniLM-L6-v2), a sentence-transformers path or id, or a loaded model. device:
    where a model given by name is loaded and run (a loaded model stays where it is). Identical
    texts are embedded once. Groups with fewer than max(min_size, 2) texts get NaN.
    """
    groups = _check_groups(groups)
    min_size = max(int(min_size), 2)
    flat = [t for g in groups for t in g]
    emb = embed_texts(flat, model, device=device, batch_size=batch_size)  # (sum of sizes, D)
    values = np.full(len(groups), np.nan)
    start = 0
    for i, g in enumerate(groups):
        if len(g) >= 2:
            values[i] = 1.0 - _mean_pairwise_cosine(emb[start:start + len(g)])
        start += len(g)
    return _skip_small(values, groups, min_size)


def sbert_diversity(texts: Sequence[str], model=None, *, device: str = "cpu", batch_size: int = 64) -> float:
    """1 - mean pairwise cosine similarity of the texts' sentence embeddings; 0.0 for < 2 texts."""
    value = sbert_diversity_groups([texts], model, device=device, batch_size=batch_size).values[0]
    return 0.0 if np.isnan(value) else float(value)


def _equation_counts(texts: Sequence[str], extract: Callable[[str], list[str]]) -> tuple[int, int]:
    eqs = [e for t in texts for e in extract(t)]
    return len(set(eqs)), len(eqs)


def distinct_equations(texts: Sequence[str],
                       extract: Callable[[str], list[str]] = extract_equations) -> float:
    """Unique / total equations over one group; 0.0 when it has none.

    extract: text -> list of normalized equations; default `extract_equations` (`<<a=b>>`
    annotations and plain `expression = number` spans). A Task's `equations` fits here.
    """
    unique, total = _equation_counts(_check_groups([texts])[0], extract)
    return unique / total if total else 0.0


def distinct_equations_groups(groups: Sequence[Sequence[str]],
                              extract: Callable[[str], list[str]] = extract_equations, *,
                              min_size: int = 1) -> GroupScores:
    """distinct_equations per group; NaN for groups with < min_size texts or no equation."""
    groups = _check_groups(groups)
    values = np.full(len(groups), np.nan)
    for i, g in enumerate(groups):
        unique, total = _equation_counts(g, extract)
        if total:
            values[i] = unique / total
    return _skip_small(values, groups, min_size)
