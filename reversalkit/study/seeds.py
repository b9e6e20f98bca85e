"""Independent replicates of a study, pooled: `seeds: [0, 1, 2]` (or `reversalkit study --seeds 0,1,2`).

Each seed runs the whole study (M1 and every round, its own model init, data order and samples)
in `<out_dir>/seed<N>/` as an ordinary resumable run over the same problems; `<out_dir>` holds
the pooled `results.json` and `report/`. Pooling, per method and iteration:
- each seed's value and their mean (pass@1, pass@k, diversity, coverage, |IS|, |RS|);
- the paired bootstrap CI over problems of pass@1(M_t) - pass@1(M1) on every test set, per seed
  and pooled (a problem's difference averaged over seeds, then resampled over problems);
- the same paired, pooled CI for the diversity of correct answers, on the problems scored at both
  M_t and M1 of a seed, and for the unbiased pass@k at the largest k of the ID evaluation samples.
A single run is pooled as one seed, which gives its report the same verdict and CIs.
Seeds are the replicate axis and problems the resampled one, so the pooled CIs say how sure the
pooled mean is given these replicates, over the population of problems.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reversalkit import metrics
from reversalkit.study.plan import ROOT, derive_seed, method_nodes, node_dir
from reversalkit.study.results import ID_SPLIT, collect_results
from reversalkit.study.store import RunStore

DIVERSITY_KEYS = ("sbert", "distinct_n", "equations")


def seed_dir(out_dir: str | Path, seed: int) -> Path:
    return Path(out_dir) / f"seed{seed}"


def _ci(values: np.ndarray, *, n_boot: int, ci: float, seed: int) -> dict[str, Any] | None:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    if n_boot <= 0:
        return {"mean": float(values.mean()), "lo": None, "hi": None, "n": int(values.size)}
    b = metrics.bootstrap_ci(values, confidence=ci, n_resamples=n_boot, seed=seed)
    return {"mean": b.mean, "lo": b.low, "hi": b.high, "n": b.n}


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else None


def _greedy(store: RunStore, node: str, split: str) -> dict[str, float] | None:
    rel = f"{node_dir(node)}/eval/{split}.greedy.jsonl.gz"
    if not store.exists(rel):
        return None
    return {str(r["id"]): float(bool(r["correct"])) for r in store.read_jsonl(rel)}


def _pass_k(store: RunStore, node: str, k: int) -> dict[str, float] | None:
    """Problem id -> unbiased pass@k of the node's ID evaluation samples (None without samples)."""
    rel = f"{node_dir(node)}/eval/{ID_SPLIT}.samples.jsonl.gz"
    if not store.exists(rel):
        return None
    counts: dict[str, list[int]] = {}
    for r in store.read_jsonl(rel):
        nc = counts.setdefault(str(r["id"]), [0, 0])
        nc[0] += 1
        nc[1] += int(bool(r["correct"]))
    return {pid: float(metrics.pass_at_k(n, c, k)) for pid, (n, c) in counts.items() if n >= k}


def _diversity(store: RunStore, node: str) -> dict[str, dict[str, float]]:
    rel = f"{node_dir(node)}/eval.json"
    if not store.exists(rel):
        return {}
    split = store.read_json(rel)["splits"].get(ID_SPLIT, {})
    return split.get("diversity_per_problem", {}).get("correct", {})


def paired_gain(per_seed: list[tuple[dict[str, float], dict[str, float]]], *, n_boot: int, ci: float,
                seed: int) -> dict[str, Any] | None:
    """CI over problems of mean(cur - base), a problem's difference averaged over the seeds that
    score it at both iterates. per_seed: (cur, base) problem id -> value, one pair per seed."""
    diffs: dict[str, list[float]] = {}
    for cur, base in per_seed:
        for pid in cur.keys() & base.keys():
            diffs.setdefault(pid, []).append(cur[pid] - base[pid])
    if not diffs:
        return None
    values = np.array([np.mean(diffs[p]) for p in sorted(diffs)], dtype=np.float64)
    return _ci(values, n_boot=n_boot, ci=ci, seed=seed)


def _get(entry: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(entry, dict) or key not in entry:
            return None
        entry = entry[key]
    return entry


def _common_is_ns(entries: list[dict[str, Any]]) -> list[str]:
    """The N of M1's pass@N on IS that every seed's entry has, ascending (none: some seed has none)."""
    curves = [_get(e, "transitions", ID_SPLIT, "m1_pass_at_n_on_is") or {} for e in entries]
    common = set.intersection(*(set(c) for c in curves)) if curves else set()
    return sorted(common, key=int)


def _pool_entry(method: str, node: Any, runs: list[tuple[int, RunStore, dict[str, Any]]], splits: list[str],
                ks: list[str], n_boot: int, ci: float,
                m1: dict[int, tuple[dict, dict, dict | None]]) -> dict[str, Any] | None:
    entries = []
    for _, _, res in runs:
        found = [e for e in res["methods"].get(method, []) if e["node"] == node.name]
        if not found:
            return None  # pooled only where every seed has the iterate
        entries.append(found[0])

    def seeds_of(*path: str) -> dict[str, Any]:
        vals = [_get(e, *path) for e in entries]
        return {"mean": _mean(vals), "seeds": vals}

    out: dict[str, Any] = {"iteration": node.iteration, "node": node.name, "round": node.kind,
                           "pass1": {s: seeds_of("eval", s, "pass1", "mean") for s in splits},
                           "pass_k": {k: seeds_of("eval", ID_SPLIT, "pass_k", k, "mean") for k in ks},
                           "diversity": {d: seeds_of("eval", ID_SPLIT, "diversity", "correct", d, "mean")
                                         for d in DIVERSITY_KEYS},
                           "diversity_n": seeds_of("eval", ID_SPLIT, "diversity", "correct", "sbert", "n"),
                           "train_coverage": seeds_of("train_coverage", "mean"),
                           "improved": seeds_of("transitions", ID_SPLIT, "improved"),
                           "regressed": seeds_of("transitions", ID_SPLIT, "regressed"),
                           "gain": {}, "diversity_change": {}}
    top_k = ks[-1] if ks else None
    # the whole curve, N -> each seed's value and their mean; its largest N (M1's extra samples,
    # m1_is_samples, reach past top_k) is the table's value
    curve = {n: seeds_of("transitions", ID_SPLIT, "m1_pass_at_n_on_is", n) for n in _common_is_ns(entries)}
    if curve:
        out["m1_pass_at_n_on_is_curve"] = curve
        top_n = max(curve, key=int)
        out["m1_pass_at_n_on_is"] = {**curve[top_n], "n": int(top_n)}
    elif top_k is not None:
        out["m1_pass_at_n_on_is"] = {**seeds_of("transitions", ID_SPLIT, "m1_pass_at_n_on_is", top_k),
                                     "n": int(top_k)}
    if node.name == ROOT:
        return out
    for split in splits:
        pairs = [(_greedy(store, node.name, split), m1[seed][0][split]) for seed, store, _ in runs]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        bseed = derive_seed(0, "pooled", node.name, split)
        out["gain"][split] = {
            "seeds": [paired_gain([p], n_boot=n_boot, ci=ci, seed=bseed) for p in pairs],
            "pooled": paired_gain(pairs, n_boot=n_boot, ci=ci, seed=bseed)}
    if top_k is not None:
        pairs = [(_pass_k(store, node.name, int(top_k)), m1[seed][2]) for seed, store, _ in runs]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        out["gain_pass_k"] = paired_gain(pairs, n_boot=n_boot, ci=ci,
                                         seed=derive_seed(0, "pooled", node.name, "pass_k"))
        if out["gain_pass_k"] is not None:
            out["gain_pass_k"]["k"] = int(top_k)
    node_div = {seed: _diversity(store, node.name) for seed, store, _ in runs}  # one read per seed
    for key in DIVERSITY_KEYS:
        pairs = [(node_div[seed].get(key, {}), m1[seed][1].get(key, {})) for seed, _, _ in runs]
        out["diversity_change"][key] = paired_gain(pairs, n_boot=n_boot, ci=ci,
                                                   seed=derive_seed(0, "pooled", node.name, key))
    return out


def pool_results(cfg: Any, runs: list[tuple[int, RunStore]],
                 results: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The pooled results dict of finished (or partial) per-seed runs (see module doc); `results`:
    each run's `collect_results`, when the caller has them already."""
    if results is None:
        results = [collect_results(store) for _, store in runs]
    collected = [(seed, store, res) for (seed, store), res in zip(runs, results)]
    first = collected[0][2]
    splits = [first["id_split"], *first["ood_splits"]]
    ks = [str(k) for k in first["ks"]]
    pooled: dict[str, Any] = {
        "pooled": True, "seeds": [s for s, _, _ in collected], "task": first["task"], "model": first["model"],
        "iterations": first["iterations"], "id_split": first["id_split"], "ood_splits": first["ood_splits"],
        "ks": first["ks"], "m1_source": first.get("m1_source"),
        "per_seed": {str(s): r for s, _, r in collected}, "methods": {}}
    # M1's records, read once per seed: every iterate is compared with them
    top_k = int(ks[-1]) if ks else None
    m1 = {seed: ({s: _greedy(store, ROOT, s) for s in splits}, _diversity(store, ROOT),
                 _pass_k(store, ROOT, top_k) if top_k else None)
          for seed, store, _ in collected}
    for method in cfg.methods:
        rows = []
        for node in method_nodes(cfg.round_kinds(method)):
            row = _pool_entry(method, node, collected, splits, ks, cfg.bootstrap, cfg.ci, m1)
            if row is None:
                break
            rows.append(row)
        pooled["methods"][method] = rows
    return pooled
