"""Assemble a run directory's per-node artifacts into one `results` dict (saved as results.json).

    results = collect_results(RunStore.read_only("runs/tiny"))
    results["methods"]["sft"][2]["eval"]["id"]["pass1"]  # {"mean", "lo", "hi"}

Layout read here (written by the loop): nodes/<node>/eval.json {"splits": {split: metrics},
"transitions": {split: ...}}, nodes/<node>/train_samples.json {"coverage": ci, ...},
nodes/<node>/round.json {"kind", "parent", "train": {...}}. Missing files (a partial run) leave
the corresponding entries out, so a report can be drawn at any point of a study.
"""

from __future__ import annotations

from typing import Any

from reversalkit.study.plan import ROOT, method_nodes, node_dir
from reversalkit.study.store import RunStore

ID_SPLIT = "id"


def ood_label(spec: str) -> str:
    """Display/storage label of an OOD set spec ('test_ood' or 'math:test' -> 'math-test')."""
    return spec.replace(":", "-").replace("/", "-")


def _load(store: RunStore, rel: str) -> Any:
    return store.read_json(rel) if store.exists(rel) else None


def collect_results(store: RunStore, config: Any | None = None) -> dict[str, Any]:
    """Results of every evaluated iterate of every method, in iteration order."""
    from reversalkit.study.config import StudyConfig  # noqa: PLC0415  (keeps report imports light)

    cfg = config if config is not None else StudyConfig.from_stored(store.config())
    m1_samples = _load(store, f"{node_dir(ROOT)}/train_samples.json")
    results: dict[str, Any] = {
        "task": cfg.task, "model": cfg.model, "iterations": cfg.iterations,
        "id_split": ID_SPLIT, "ood_splits": [ood_label(s) for s in cfg.ood_tasks],
        "ks": list(cfg.ks), "samples_per_problem": cfg.samples_per_problem,
        "eval_samples": cfg.eval_samples,
        "m1_coverage": (m1_samples or {}).get("coverage"),
        "m1_source": cfg.m1 or "trained from the base model on the gold train set",
        "id_source": cfg.id_split,
        "methods": {},
    }
    for method in cfg.methods:
        entries = []
        for node in method_nodes(cfg.round_kinds(method)):
            ev = _load(store, f"{node_dir(node.name)}/eval.json")
            if ev is None:
                break
            samples = _load(store, f"{node_dir(node.name)}/train_samples.json")
            rnd = _load(store, f"{node_dir(node.name)}/round.json")
            entries.append({
                "iteration": node.iteration, "node": node.name, "round": node.kind,
                "eval": ev["splits"], "transitions": ev.get("transitions", {}),
                "train_coverage": (samples or {}).get("coverage"),
                "train": (rnd or {}).get("train"),
                "data": (rnd or {}).get("data"),
            })
        results["methods"][method] = entries
    return results
