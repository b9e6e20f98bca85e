"""The report of a multi-seed study (`seeds: [...]`): the main table, a verdict per method, and one
figure that shows progress and reversal at a glance.

Input is the pooled results dict of `reversalkit.study.seeds.pool_results` (saved as
`<out_dir>/results.json`); each seed's own report stays in `<out_dir>/seed<N>/report/`.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from reversalkit.study.report import _atomic_write, _plt, _save, _style
from reversalkit.study.tables import fmt, format_table, html_table, md_table, paper_reference
from reversalkit.study.verdict import fmt_gain, verdict_sections, verdicts

DIV_LABEL = {"sbert": "SBERT div. (c)", "distinct_n": "distinct-1..5 (c)", "equations": "distinct eqs (c)"}


def _seeds(v: dict[str, Any] | None) -> str:
    """'0.412 (0.40 0.43 0.41)': the mean over seeds, then each seed's value."""
    if not v or v.get("mean") is None:
        return "-"
    return f"{v['mean']:.3f} ({' '.join(fmt(x, 2) for x in v['seeds'])})"


def _is_cell(v: dict[str, Any], n_top: int | None) -> str:
    if v.get("mean") is None:
        return fmt(None)
    return fmt(v["mean"]) + ("" if v.get("n") == n_top else f" (N={v.get('n')})")


def main_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The main table: one row per method and iteration, pooled over seeds."""
    sid, oods = results["id_split"], results["ood_splits"]
    # N of the first measured value (M1's own row has none); a row measured at another N says so
    n_top = next((e["m1_pass_at_n_on_is"].get("n") for ents in results["methods"].values() for e in ents
                  if (e.get("m1_pass_at_n_on_is") or {}).get("mean") is not None), None)
    header = ["method", "iter", f"pass@1 {sid} (seeds)", f"Δ pass@1 {sid} vs M1 [CI]",
              *[h for s in oods for h in (f"pass@1 {s}", f"Δ pass@1 {s} vs M1 [CI]")],
              "IS size", "RS size", f"M1 pass@{n_top or 'N'} on IS",
              "SBERT div. (c)", "Δ SBERT vs M1 [CI]", "distinct-1..5 (c)", "distinct eqs (c)", "train cov."]
    rows = []
    for method, entries in results["methods"].items():
        for e in entries:
            rows.append([
                method, str(e["iteration"]), _seeds(e["pass1"].get(sid)),
                fmt_gain(e["gain"].get(sid, {}).get("pooled")),
                *[c for s in oods for c in (fmt(e["pass1"].get(s, {}).get("mean")),
                                            fmt_gain(e["gain"].get(s, {}).get("pooled")))],
                fmt(e["improved"]["mean"], 1), fmt(e["regressed"]["mean"], 1),
                _is_cell(e.get("m1_pass_at_n_on_is") or {}, n_top),
                fmt(e["diversity"]["sbert"]["mean"]), fmt_gain(e["diversity_change"].get("sbert")),
                fmt(e["diversity"]["distinct_n"]["mean"]), fmt(e["diversity"]["equations"]["mean"]),
                fmt(e["train_coverage"]["mean"]),
            ])
    return header, rows


def plot_reversal(results: dict[str, Any], out: Path) -> str:
    """Change vs M1 per iteration and method (pooled, paired CIs): ID pass@1, OOD pass@1, SBERT
    diversity of correct answers. Progress is the first panel above zero; reversal, the others."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    sid, oods = results["id_split"], results["ood_splits"]
    panels = [(f"Δ pass@1 {sid}", lambda e: e["gain"].get(sid, {}).get("pooled"))]
    panels += [(f"Δ pass@1 {s}", lambda e, s=s: e["gain"].get(s, {}).get("pooled")) for s in oods]
    panels += [("Δ SBERT diversity (correct)", lambda e: e["diversity_change"].get("sbert"))]
    curves = {m: ents[-1].get("m1_pass_at_n_on_is_curve") for m, ents in results["methods"].items()}
    curves = {m: c for m, c in curves.items() if c}
    fig, axes = plt.subplots(1, len(panels) + bool(curves), figsize=(4.2 * (len(panels) + bool(curves)), 3.6),
                             squeeze=False)
    for ax, (title, getter) in zip(axes[0], panels):
        ax.axhline(0.0, color="black", lw=0.8)
        for method, entries in results["methods"].items():
            color, marker = _style(method)
            pts = [(e["iteration"], getter(e)) for e in entries[1:]]
            pts = [(1, {"mean": 0.0, "lo": 0.0, "hi": 0.0})] + [(t, c) for t, c in pts if c]
            xs = [t for t, _ in pts]
            ys = [c["mean"] for _, c in pts]
            err = [[c["mean"] - (c["lo"] if c["lo"] is not None else c["mean"]) for _, c in pts],
                   [(c["hi"] if c["hi"] is not None else c["mean"]) - c["mean"] for _, c in pts]]
            ax.errorbar(xs, ys, yerr=err, color=color, marker=marker, capsize=3, label=method)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if curves:
        _plot_is_curves(axes[0][-1], curves, results)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"vs M1, pooled over seeds {results['seeds']} (95% paired bootstrap CIs over problems)",
                 fontsize=10)
    return _save(fig, out / "reversal.png", rect=(0, 0, 1, 0.93))


def _plot_is_curves(ax, curves: dict[str, dict[str, dict[str, Any]]], results: dict[str, Any]) -> None:
    """M1's pass@N on the last iterate's improvement set against N: the mean over seeds, each seed's
    value as a faint point (the paper's test of whether new solves were in M1's generation space)."""
    for method, curve in curves.items():
        color, marker = _style(method)
        ns = [int(n) for n in curve]
        ax.plot(ns, [c["mean"] for c in curve.values()], color=color, marker=marker, label=method)
        for n, c in zip(ns, curve.values()):
            vals = [v for v in c["seeds"] if v is not None]
            ax.scatter([n] * len(vals), vals, color=color, alpha=0.3, s=10)
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"M1 pass@N on IS(M{results['iterations']})", fontsize=10)
    ax.set_xlabel("N")
    ax.grid(alpha=0.3)


def write_pooled_report(results: dict[str, Any], out_dir: str | Path) -> Path:
    """report.md, index.html and reversal.png of a multi-seed study; returns report.md. The tidy
    values are `metrics.csv` beside results.json (`reversalkit.study.verdict.metrics_csv`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig = plot_reversal(results, out)
    header, rows = main_rows(results)
    intro = (f"Task {results['task']}, model {results['model']}, {results['iterations']} iterations, "
             f"seeds {', '.join(map(str, results['seeds']))} (each a full replicate: M1 and every round). "
             "Pass@1 is greedy; Δ columns are pooled paired bootstrap 95% CIs over problems; (c) = within "
             "correct samples. Each seed's full report: seed<N>/report/.")
    alt = ("Change against M1 per iteration: ID pass@1, OOD pass@1 and SBERT diversity of correct answers; "
           "M1's pass@N on the last iterate's improvement set")
    found_md, found_html = verdict_sections(results)
    csv_note = "Tidy per-seed values for pandas: `../metrics.csv` (method, iteration, seed, metric, value)."
    md = ["# reversalkit study report (pooled over seeds)", "", intro, "", *found_md,
          f"![{alt}]({fig})", "", "## Main table", "", md_table(header, rows), "", csv_note, "",
          "## Reference numbers from the paper", "", paper_reference(results), ""]
    _atomic_write(out / "report.md", "\n".join(md))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>reversalkit pooled study</title>"
            "<style>body{font-family:sans-serif;max-width:1300px;margin:auto}"
            "table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}</style></head><body>"
            f"<h1>reversalkit study report (pooled over seeds)</h1><p>{html.escape(intro)}</p>"
            f"{found_html}<img src='{fig}' alt='{html.escape(alt)}' style='max-width:100%'>"
            f"<h2>Main table</h2>{html_table(header, rows)}<p>Tidy values: <a href='../metrics.csv'>"
            f"metrics.csv</a></p><h2>Reference numbers from the paper</h2><pre>"
            f"{html.escape(paper_reference(results))}</pre></body></html>")
    _atomic_write(out / "index.html", page)
    return out / "report.md"


def pooled_summary(results: dict[str, Any]) -> str:
    """The terminal table of a multi-seed study."""
    header, rows = main_rows(results)
    lines = [f"pooled over seeds {results['seeds']}", *verdicts(results), format_table(header, rows)]
    return "\n".join(lines)
