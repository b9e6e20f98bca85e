"""The study report: report.md + index.html with matplotlib PNGs, and a compact terminal table.

Input is the `results` dict that `reversalkit.study.results.collect_results` assembles from a run
directory (also saved as results.json), so a report can be rebuilt from any finished or partial
run: `reversalkit report RUN_DIR`.

Plots: pass@1 per iteration per method (ID and each OOD set, with bootstrap CIs), diversity of
correct and incorrect samples (distinct-n, SBERT, distinct equations), improvement/regression set
sizes with M1's pass@N on IS(t), train-set coverage, pass@k curves, per-level accuracy.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from reversalkit.study.tables import (
    best_iterates,
    fmt_ci,
    html_table,
    md_table,
    paper_reference,
    summary_rows,
)
from reversalkit.study.verdict import verdict_sections

METHOD_STYLE = {"sft": ("tab:blue", "o"), "dpo": ("tab:orange", "s"), "sft_dpo": ("tab:green", "^"),
                "gold": ("tab:gray", "x")}
DIV_METRICS = (("distinct_n", "distinct n-grams (n=1..5)"), ("sbert", "SBERT diversity"),
               ("equations", "distinct equations"))


def _plt():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")  # the report is written headless, never shown
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _style(method: str) -> tuple[str, str]:
    return METHOD_STYLE.get(method, ("tab:gray", "d"))


def _series(entries: list[dict[str, Any]], getter) -> tuple[list[int], list[float], list[float], list[float]]:
    xs, ys, lo, hi = [], [], [], []
    for e in entries:
        v = getter(e)
        if not v or v.get("mean") is None:
            continue
        xs.append(e["iteration"])
        ys.append(v["mean"])
        lo.append(v["mean"] - v["lo"] if v.get("lo") is not None else 0.0)
        hi.append(v["hi"] - v["mean"] if v.get("hi") is not None else 0.0)
    return xs, ys, lo, hi


def _line(ax, method: str, entries, getter, label: str | None = None) -> None:
    color, marker = _style(method)
    xs, ys, lo, hi = _series(entries, getter)
    if xs:
        ax.errorbar(xs, ys, yerr=[lo, hi], color=color, marker=marker, capsize=3, label=label or method)


def _finish(fig, ax_list, path: Path) -> str:
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    for ax in ax_list:
        ax.grid(alpha=0.3)
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = ax_list[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False)
    return _save(fig, path, rect=(0, 0, 1, 0.93))  # room for the figure legend on top


def _legend_once(ax) -> None:
    """A legend with each label once (M1 appears once per method in the raw handles)."""
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=8)


def _save(fig, path: Path, rect: tuple[float, float, float, float] | None = None) -> str:
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path.name


def plot_pass1(results: dict[str, Any], out: Path) -> str:
    plt = _plt()
    splits = [results["id_split"], *results["ood_splits"]]
    fig, axes = plt.subplots(1, len(splits), figsize=(4.5 * len(splits), 3.6), squeeze=False)
    for ax, split in zip(axes[0], splits):
        for method, entries in results["methods"].items():
            _line(ax, method, entries, lambda e, s=split: e["eval"].get(s, {}).get("pass1"))
        ax.set_title(f"greedy pass@1 - {split}")
    return _finish(fig, list(axes[0]), out / "pass1.png")


def plot_diversity(results: dict[str, Any], out: Path) -> str:
    plt = _plt()
    split = results["id_split"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), squeeze=False)
    for row, group in enumerate(("correct", "incorrect")):
        for col, (key, title) in enumerate(DIV_METRICS):
            ax = axes[row][col]
            for method, entries in results["methods"].items():
                _line(ax, method, entries, lambda e, g=group, k=key:
                      e["eval"].get(split, {}).get("diversity", {}).get(g, {}).get(k))
            ax.set_title(f"{title} - {group}", fontsize=10)
    return _finish(fig, [a for r in axes for a in r], out / "diversity.png")


def plot_transitions(results: dict[str, Any], out: Path) -> str:
    plt = _plt()
    split = results["id_split"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), squeeze=False)
    ax_is, ax_rs, ax_pn = axes[0]
    for method, entries in results["methods"].items():
        color, marker = _style(method)
        tr = [(e["iteration"], e.get("transitions", {}).get(split)) for e in entries]
        tr = [(t, x) for t, x in tr if x]
        if not tr:
            continue
        ts = [t for t, _ in tr]
        ax_is.plot(ts, [x["improved"] for _, x in tr], color=color, marker=marker, label=method)
        ax_rs.plot(ts, [x["regressed"] for _, x in tr], color=color, marker=marker, label=method)
        last_t, last = tr[-1]
        curve = last.get("m1_pass_at_n_on_is") or {}
        if curve:
            ns = sorted(int(n) for n in curve)
            ax_pn.plot(ns, [curve[str(n)] for n in ns], color=color, marker=marker, label=method)
    ax_is.set_title(f"|IS(t)|: solved by M_t, not M1 ({split})", fontsize=10)
    ax_rs.set_title(f"|RS(t)|: solved by M1, not M_t ({split})", fontsize=10)
    ax_pn.set_title("M1 pass@N on IS(T)", fontsize=10)
    ax_pn.set_xscale("log", base=2)
    ax_pn.set_ylim(0, 1.05)
    ax_pn.set_xlabel("N")
    ax_pn.grid(alpha=0.3)
    return _finish(fig, [ax_is, ax_rs], out / "transitions.png")


def plot_coverage(results: dict[str, Any], out: Path) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for method, entries in results["methods"].items():
        _line(ax, method, entries, lambda e: e.get("train_coverage"))
    cov = results.get("m1_coverage")
    if cov and cov.get("mean") is not None:
        ax.axhline(cov["mean"], color="k", ls="--", lw=1, label="M1")
    ax.set_title("coverage on train (mean fraction of correct samples)", fontsize=10)
    return _finish(fig, [ax], out / "coverage.png")


def plot_pass_k(results: dict[str, Any], out: Path) -> str | None:
    plt = _plt()
    split = results["id_split"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    drawn = False
    for method, entries in results["methods"].items():
        color, marker = _style(method)
        for e, ls in ((entries[0], ":"), (entries[-1], "-")) if entries else ():
            pk = e["eval"].get(split, {}).get("pass_k") or {}
            ks = sorted(int(k) for k in pk)
            if not ks:
                continue
            label = "M1" if e["iteration"] == 1 else f"{method} M{e['iteration']}"
            ax.plot(ks, [pk[str(k)]["mean"] for k in ks], ls=ls, color="k" if ls == ":" else color,
                    marker=marker, label=label)
            drawn = True
    if not drawn:
        _plt().close(fig)
        return None
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_title(f"pass@k ({split})", fontsize=10)
    ax.grid(alpha=0.3)
    _legend_once(ax)
    return _save(fig, out / "pass_k.png")


def plot_levels(results: dict[str, Any], out: Path) -> str | None:
    plt = _plt()
    entries = [e for ents in results["methods"].values() for e in ents]
    # one level has no accuracy profile to draw
    splits = [s for s in [results["id_split"], *results["ood_splits"]]
              if len({k for e in entries for k in (e["eval"].get(s, {}).get("levels") or {})}) >= 2]
    if not splits:
        return None
    fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 3.6), squeeze=False)
    for ax, split in zip(axes[0], splits):
        # Levels are labels ("2", "Level 3"): plot at integer positions so matplotlib never guesses units.
        levels = sorted({k for e in entries for k in (e["eval"].get(split, {}).get("levels") or {})},
                        key=lambda x: (len(x), x))
        pos = {k: i for i, k in enumerate(levels)}
        for method, ents in results["methods"].items():
            color, marker = _style(method)
            for e, ls in ((ents[0], ":"), (ents[-1], "-")):
                lv = e["eval"].get(split, {}).get("levels") or {}
                keys = [k for k in levels if k in lv]
                if keys:
                    ax.plot([pos[k] for k in keys], [lv[k]["pass1"] for k in keys], ls=ls, marker=marker,
                            color="k" if ls == ":" else color,
                            label="M1" if e["iteration"] == 1 else f"{method} M{e['iteration']}")
        ax.set_xticks(range(len(levels)), levels)
        ax.set_title(f"greedy accuracy by level - {split}", fontsize=10)
        ax.set_xlabel("level")
        ax.grid(alpha=0.3)
        _legend_once(ax)
    return _save(fig, out / "levels.png")


def write_report(results: dict[str, Any], out_dir: str | Path, pooled: dict[str, Any] | None = None) -> Path:
    """Write report.md, index.html and the PNGs into out_dir; returns the report.md path. `pooled`:
    the run pooled as one seed (`seeds.pool_results`), whose paired CIs give the verdict section."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = [("pass@1 per iteration", plot_pass1(results, out)),
               ("diversity within correct and incorrect samples (ID)", plot_diversity(results, out)),
               ("improvement / regression sets and M1's pass@N on IS(T)", plot_transitions(results, out)),
               ("coverage on the train set", plot_coverage(results, out)),
               ("pass@k: M1 (dotted) vs the last iterate", plot_pass_k(results, out)),
               ("accuracy per level", plot_levels(results, out))]
    figures = [(t, f) for t, f in figures if f]
    header, rows = summary_rows(results)
    bheader, brows = best_iterates(results)
    paper = paper_reference(results)
    cov = results.get("m1_coverage")
    intro = (f"Task **{results.get('task')}**, model **{results.get('model')}**, "
             f"{results.get('iterations')} iterations, methods {', '.join(results['methods'])}. "
             f"M1: {results.get('m1_source', '-')}; its coverage on train: {fmt_ci(cov)}. "
             f"ID evaluation: the task's {results.get('id_source', 'test')} split.")
    found_md, found_html = verdict_sections(pooled) if pooled is not None else ([], "")
    md = ["# reversalkit study report", "", intro, "", *found_md,
          "## Best iterate per method (by ID greedy pass@1)", "",
          md_table(bheader, brows), "", "## Every iteration", "", md_table(header, rows), ""]
    for title, fname in figures:
        md += [f"## {title[0].upper() + title[1:]}", "", f"![{title}]({fname})", ""]
    md += ["## Reference numbers from the paper", "", paper, ""]
    _atomic_write(out / "report.md", "\n".join(md))
    figs_html = "".join(f"<h2>{html.escape(t)}</h2><img src='{f}' alt='{html.escape(t)}' "
                        "style='max-width:100%'>" for t, f in figures)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>reversalkit study</title>"
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}</style></head><body>"
        f"<h1>reversalkit study report</h1><p>{html.escape(intro).replace('**', '')}</p>{found_html}"
        f"<h2>Best iterate per method</h2>{html_table(bheader, brows)}"
        f"<h2>Every iteration</h2>{html_table(header, rows)}{figs_html}"
        f"<h2>Reference numbers from the paper</h2><pre>{html.escape(paper)}</pre></body></html>")
    _atomic_write(out / "index.html", page)
    return out / "report.md"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
