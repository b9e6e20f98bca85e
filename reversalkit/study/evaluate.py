"""Evaluation of one model iterate on one test set, from its rewarded samples (no model needed).

`summarize_split` turns greedy and sampled completions of a test set into the paper's numbers:
greedy pass@1, pass@k curves, diversity within correct and within incorrect samples (distinct
n-grams, SBERT, distinct equations, distinct texts), per-level accuracy and group disparity, each
with a seeded bootstrap CI over problems. `transition_summary` compares an iterate with M1 (IS/RS
and M1's pass@N on IS). Records are plain dicts `{"id", "i", "text", "correct"}`, so these
functions run the same on one process or on a shard's gathered records.

Diversity is scored on groups of exactly k samples per problem and label (correct / incorrect):
the k samples of that label with the lowest sample indices "i". Distinct-n and distinct equations
fall as groups grow, so without a fixed k an iterate that is right more often would look less
diverse for that reason alone. Choosing by index and not by text keeps the choice independent of
what was written, and the same on every rerun; problems with fewer than k samples of a label are
not scored for that label, and each metric's "n" counts the problems that were.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from reversalkit import metrics
from reversalkit.study.data import group_by_problem


def ci_dict(values: Sequence[float], *, n_boot: int, ci: float, seed: int) -> dict[str, Any]:
    """{"mean", "lo", "hi", "n"} of per-problem values (lo/hi None without bootstrap or values)."""
    vals = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if vals.size == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    if n_boot <= 0:
        return {"mean": float(vals.mean()), "lo": None, "hi": None, "n": int(vals.size)}
    b = metrics.bootstrap_ci(vals, confidence=ci, n_resamples=n_boot, seed=seed)
    return {"mean": b.mean, "lo": b.low, "hi": b.high, "n": b.n}


def level_number(value: Any) -> float | None:
    """The number of a difficulty level (3, "3", "Level 3" -> 3.0); None when it has none
    ("Level ?", None, "None"): an unknown level is no level, never the hardest one."""
    match = re.search(r"\d+(?:\.\d+)?", str(value)) if value is not None else None
    return float(match.group(0)) if match else None


def group_disparity(acc_by_level: dict[str, float]) -> float | None:
    """(Acc_lowest - Acc_highest) / Acc_lowest x 100 over the levels that carry a number, lowest
    and highest by that number (None if fewer than two such levels or Acc_lowest is 0)."""
    known = {k: v for k, v in acc_by_level.items() if level_number(k) is not None}
    if len(known) < 2:
        return None
    keys = sorted(known, key=level_number)
    low, high = known[keys[0]], known[keys[-1]]
    return None if low == 0 else (low - high) / low * 100.0


def level_accuracy(problems: Sequence[Any], greedy: dict[str, bool],
                   level_key: str) -> dict[str, dict[str, Any]]:
    """Level -> {"n", "pass1"} of greedy answers, levels in numeric order. Problems whose level
    has no number (see `level_number`) are left out rather than pooled into a level of their own."""
    levels: dict[str, list[bool]] = {}
    for p in problems:
        value = (p.meta or {}).get(level_key)
        if level_number(value) is not None:
            levels.setdefault(str(value), []).append(greedy[str(p.id)])
    return {k: {"n": len(v), "pass1": float(np.mean(v))}
            for k, v in sorted(levels.items(), key=lambda kv: level_number(kv[0]))}


def diversity_values(groups: dict[str, list[str]], *, equations: Callable[[str], list[str]] | None,
                     sbert: Any, sbert_batch_size: int = 64, device: str = "cpu"
                     ) -> dict[str, dict[str, float]]:
    """Per-problem diversity values of one kind of samples (correct or incorrect): metric ->
    {problem id: value}, for the problems the metric scores.

    groups: problem id -> texts; pass groups of one size (see `diversity_groups`). distinct_n /
    equations / sbert score groups of >= 2 texts (one text has no diversity; a group without
    equations has no equation score); `unique` counts the distinct texts of every non-empty group.
    `sbert` is a loaded sentence model or None to skip.
    """
    keys = [k for k in groups if len(groups[k]) >= 2]
    gl = [groups[k] for k in keys]

    def keyed(scores: Any) -> dict[str, float]:
        return {k: float(v) for k, v in zip(keys, scores.values) if not math.isnan(v)}

    out: dict[str, dict[str, float]] = {
        "unique": {k: float(len(set(texts))) for k, texts in groups.items() if texts},
        "distinct_n": keyed(metrics.distinct_ngrams_avg_groups(gl, 5, min_size=2)) if gl else {},
        "equations": {}, "sbert": {}}
    if equations is not None and gl:
        out["equations"] = keyed(metrics.distinct_equations_groups(gl, equations, min_size=2))
    if sbert is not None and gl:
        out["sbert"] = keyed(metrics.sbert_diversity_groups(gl, sbert, device=device,
                                                            batch_size=sbert_batch_size, min_size=2))
    return out


def diversity_groups(by: dict[str, list[dict[str, Any]]], ids: Sequence[str], *, correct: bool,
                     size: int) -> dict[str, list[str]]:
    """Problem id -> texts of its `size` samples of one label with the lowest sample indices, for
    the problems (in `ids` order) that have at least `size` of them. `by` is `group_by_problem`
    output, whose samples are already in index order."""
    texts = {i: [s["text"] for s in by.get(i, []) if bool(s["correct"]) == correct] for i in ids}
    return metrics.fixed_size_groups(texts, size)


def summarize_split(problems: Sequence[Any], greedy: Sequence[dict[str, Any]],
                    samples: Sequence[dict[str, Any]], *, ks: Sequence[int], n_boot: int, ci: float,
                    seed: int, level_key: str = "level",
                    equations: Callable[[str], list[str]] | None = None, sbert: Any = None,
                    diversity_max_problems: int | None = None, sbert_max_problems: int | None = None,
                    sbert_batch_size: int = 64, sbert_device: str = "cpu",
                    diversity_group_size: int = 4) -> dict[str, Any]:
    """All metrics of one iterate on one test set.

    problems: the test problems (`id`, `meta`); greedy: one record per problem; samples: the
    N sampled records per problem (may be empty). diversity_group_size: k of the module doc,
    capped at the samples drawn per problem; the k used is returned as "diversity_group_size".
    sbert_max_problems: SBERT scores the first N problems that have k samples of the label.
    Returns a JSON-ready dict (see module doc).
    """
    if diversity_group_size < 2:
        raise ValueError(f"diversity_group_size must be >= 2 (one text has no diversity), "
                         f"got {diversity_group_size}")
    ids = [str(p.id) for p in problems]
    g = {str(r["id"]): bool(r["correct"]) for r in greedy}
    missing = [i for i in ids if i not in g]
    if missing:
        raise ValueError(f"no greedy record for {len(missing)} problem(s), e.g. {missing[:3]}")
    out: dict[str, Any] = {"n": len(ids), "pass1": ci_dict([float(g[i]) for i in ids], n_boot=n_boot,
                                                           ci=ci, seed=seed)}
    levels = level_accuracy(problems, g, level_key)
    if levels:
        out["levels"] = levels
        out["disparity"] = group_disparity({k: v["pass1"] for k, v in levels.items()})
    if not samples:
        return out
    by = group_by_problem(samples)
    n = np.array([len(by.get(i, [])) for i in ids])
    c = np.array([sum(s["correct"] for s in by.get(i, [])) for i in ids])
    out["sample_accuracy"] = ci_dict(list(c / np.maximum(n, 1)), n_boot=n_boot, ci=ci, seed=seed)
    out["pass_k"] = {str(k): ci_dict(list(metrics.pass_at_k(n, c, k)), n_boot=n_boot, ci=ci, seed=seed)
                     for k in ks if k <= n.min()}
    # A sibling key, not one inside "diversity", whose keys readers take to be the labels.
    size = min(diversity_group_size, int(n.max()))
    out["diversity_group_size"] = size
    div_ids = ids[:diversity_max_problems] if diversity_max_problems else ids
    out["diversity"] = {}
    per_problem = out["diversity_per_problem"] = {}
    for label, want in (("correct", True), ("incorrect", False)):
        groups = diversity_groups(by, div_ids, correct=want, size=size) if size >= 2 else {}
        vals = diversity_values(groups, equations=equations, sbert=None)
        if sbert is not None:
            # The cap counts problems that are scored, so N problems give N SBERT values.
            sub = dict(itertools.islice(groups.items(), sbert_max_problems))
            vals["sbert"] = diversity_values(sub, equations=None, sbert=sbert,
                                             sbert_batch_size=sbert_batch_size, device=sbert_device)["sbert"]
        out["diversity"][label] = {k: ci_dict(list(v.values()), n_boot=n_boot, ci=ci, seed=seed)
                                   for k, v in vals.items()}
        # per problem, for paired comparisons between iterates and pooling over seeds
        per_problem[label] = {k: v for k, v in vals.items() if k != "unique"}
    return out


def sample_counts(samples: Sequence[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Problem id -> (samples drawn, correct)."""
    return {pid: (len(g), sum(bool(s["correct"]) for s in g)) for pid, g in group_by_problem(samples).items()}


def transition_summary(base_greedy: Sequence[dict[str, Any]], cur_greedy: Sequence[dict[str, Any]],
                       base_samples: Sequence[dict[str, Any]], ks: Sequence[int]) -> dict[str, Any]:
    """IS/RS of an iterate against M1 and M1's pass@N on IS (N in ks, from M1's samples)."""
    base = {str(r["id"]): bool(r["correct"]) for r in base_greedy}
    cur = {str(r["id"]): bool(r["correct"]) for r in cur_greedy}
    tr = metrics.transitions(base, cur)
    out = tr.summary()
    if base_samples and tr.improved:
        counts = sample_counts(base_samples)
        n_min = min(counts[i][0] for i in tr.improved)
        curve = tr.improved_pass_at_k(counts, [k for k in ks if k <= n_min])
        out["m1_pass_at_n_on_is"] = {str(k): v for k, v in curve.items()}
    return out


def coverage_summary(samples: Sequence[dict[str, Any]], *, n_boot: int, ci: float,
                     seed: int) -> dict[str, Any]:
    """Coverage of the sampling model on these problems: mean fraction of correct samples, with CI."""
    counts = sample_counts(samples)
    fractions = [c / n for n, c in (counts[k] for k in sorted(counts))]
    solved = sum(1 for n, c in counts.values() if c > 0)
    return {"coverage": ci_dict(fractions, n_boot=n_boot, ci=ci, seed=seed),
            "problems": len(counts), "solved_any": solved,
            "samples": sum(n for n, _ in counts.values()), "correct": sum(c for _, c in counts.values())}
