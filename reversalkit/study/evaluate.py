"""Evaluation of one model iterate on one test set, from its rewarded samples (no model needed).

`summarize_split` turns greedy and sampled completions of a test set into the paper's numbers:
greedy pass@1, pass@k curves, diversity within correct and within incorrect samples (distinct
n-grams, SBERT, distinct equations, distinct texts), per-level accuracy and group disparity, each
with a seeded bootstrap CI over problems. `transition_summary` compares an iterate with M1 (IS/RS
and M1's pass@N on IS). Records are plain dicts `{"id", "i", "text", "correct"}`, so these
functions run the same on one process or on a shard's gathered records.
"""

from __future__ import annotations

import math
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


def group_disparity(acc_by_level: dict[str, float]) -> float | None:
    """(Acc_lowest - Acc_highest) / Acc_lowest x 100 over the sorted levels (None if undefined)."""
    if len(acc_by_level) < 2:
        return None
    keys = sorted(acc_by_level, key=_level_order)
    low, high = acc_by_level[keys[0]], acc_by_level[keys[-1]]
    return None if low == 0 else (low - high) / low * 100.0


def _level_order(key: str) -> tuple[int, float | str]:
    digits = "".join(ch for ch in str(key) if ch.isdigit() or ch == ".")
    try:
        return (0, float(digits))
    except ValueError:
        return (1, str(key))


def diversity_values(groups: dict[str, list[str]], *, equations: Callable[[str], list[str]] | None,
                     sbert: Any, sbert_batch_size: int = 64, device: str = "cpu") -> dict[str, list[float]]:
    """Per-problem diversity values of one kind of samples (correct or incorrect).

    groups: problem id -> texts. distinct_n / equations / sbert score groups of >= 2 texts (one
    text has no diversity; a group without equations has no equation score); `unique` counts the
    distinct texts of every non-empty group. `sbert` is a loaded sentence model or None to skip.
    """
    keys = [k for k in sorted(groups) if len(groups[k]) >= 2]
    gl = [groups[k] for k in keys]
    out: dict[str, list[float]] = {
        "unique": [float(len(set(groups[k]))) for k in sorted(groups) if groups[k]],
        "distinct_n": list(metrics.distinct_ngrams_avg_groups(gl, 5, min_size=2).scored()) if gl else [],
        "equations": [], "sbert": []}
    if equations is not None and gl:
        out["equations"] = list(metrics.distinct_equations_groups(gl, equations, min_size=2).scored())
    if sbert is not None and gl:
        scores = metrics.sbert_diversity_groups(gl, sbert, device=device, batch_size=sbert_batch_size,
                                                min_size=2)
        out["sbert"] = list(scores.scored())
    return out


def summarize_split(problems: Sequence[Any], greedy: Sequence[dict[str, Any]],
                    samples: Sequence[dict[str, Any]], *, ks: Sequence[int], n_boot: int, ci: float,
                    seed: int, level_key: str = "level",
                    equations: Callable[[str], list[str]] | None = None, sbert: Any = None,
                    diversity_max_problems: int | None = None, sbert_max_problems: int | None = None,
                    sbert_batch_size: int = 64,
                    sbert_device: str = "cpu") -> dict[str, Any]:
    """All metrics of one iterate on one test set.

    problems: the test problems (`id`, `meta`); greedy: one record per problem; samples: the
    N sampled records per problem (may be empty). Returns a JSON-ready dict (see module doc).
    """
    ids = [str(p.id) for p in problems]
    g = {str(r["id"]): bool(r["correct"]) for r in greedy}
    missing = [i for i in ids if i not in g]
    if missing:
        raise ValueError(f"no greedy record for {len(missing)} problem(s), e.g. {missing[:3]}")
    out: dict[str, Any] = {"n": len(ids), "pass1": ci_dict([float(g[i]) for i in ids], n_boot=n_boot,
                                                           ci=ci, seed=seed)}
    levels: dict[str, list[bool]] = {}
    for p in problems:
        if level_key in (p.meta or {}):
            levels.setdefault(str(p.meta[level_key]), []).append(g[str(p.id)])
    if levels:
        out["levels"] = {k: {"n": len(v), "pass1": float(np.mean(v))}
                         for k, v in sorted(levels.items(), key=lambda kv: _level_order(kv[0]))}
        out["disparity"] = group_disparity({k: v["pass1"] for k, v in out["levels"].items()})
    if not samples:
        return out
    by = group_by_problem(samples)
    n = np.array([len(by.get(i, [])) for i in ids])
    c = np.array([sum(s["correct"] for s in by.get(i, [])) for i in ids])
    out["sample_accuracy"] = ci_dict(list(c / np.maximum(n, 1)), n_boot=n_boot, ci=ci, seed=seed)
    out["pass_k"] = {str(k): ci_dict(list(metrics.pass_at_k(n, c, k)), n_boot=n_boot, ci=ci, seed=seed)
                     for k in ks if k <= n.min()}
    div_ids = ids[:diversity_max_problems] if diversity_max_problems else ids
    out["diversity"] = {}
    for label, want in (("correct", True), ("incorrect", False)):
        groups = {i: [s["text"] for s in by.get(i, []) if bool(s["correct"]) == want] for i in div_ids}
        vals = diversity_values(groups, equations=equations, sbert=None)
        if sbert is not None:
            sub = {i: groups[i] for i in div_ids[:sbert_max_problems]} if sbert_max_problems else groups
            vals["sbert"] = diversity_values(sub, equations=None, sbert=sbert,
                                             sbert_batch_size=sbert_batch_size, device=sbert_device)["sbert"]
        out["diversity"][label] = {k: ci_dict(v, n_boot=n_boot, ci=ci, seed=seed) for k, v in vals.items()}
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
