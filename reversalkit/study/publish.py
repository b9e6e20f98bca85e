"""A run's outputs from its store: results.json, metrics.csv and report/ (one run or pooled seeds).

A single run is also pooled as one seed, so its report opens with the same verdict, paired CIs
and tidy `metrics.csv` as a multi-seed study's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reversalkit.study.pooled_report import write_pooled_report
from reversalkit.study.report import write_report
from reversalkit.study.results import collect_results
from reversalkit.study.seeds import pool_results
from reversalkit.study.store import RunStore
from reversalkit.study.verdict import metrics_csv


def publish_run(store: RunStore, cfg: Any,
                results: dict[str, Any] | None = None) -> tuple[dict[str, Any], Path]:
    """results.json, metrics.csv and report/ of one run; returns (results, report.md). `results`:
    the run's `collect_results`, when the caller has them already."""
    results = results if results is not None else collect_results(store, cfg)
    store.write_json("results.json", results)
    pooled = pool_results(cfg, [(cfg.seed, store)], [results]) if any(results["methods"].values()) else None
    if pooled is not None:
        store.write_text("metrics.csv", metrics_csv(pooled))
    return results, write_report(results, store.path("report"), pooled=pooled)


def publish_pooled(parent: RunStore, cfg: Any,
                   runs: list[tuple[int, RunStore]]) -> tuple[dict[str, Any], Path]:
    """results.json, metrics.csv and report/ of a multi-seed study from its seeds' runs."""
    results = pool_results(cfg, runs)
    parent.write_json("results.json", results)
    parent.write_text("metrics.csv", metrics_csv(results))
    return results, write_pooled_report(results, parent.path("report"))
