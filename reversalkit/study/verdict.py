"""What a study found, per method: the verdict table, its sentences, and the tidy `metrics.csv`.

Input is a pooled results dict (`reversalkit.study.seeds.pool_results`; a single run is pooled as
one seed). Every Δ is against M1 on the same problems, with its paired bootstrap CI over problems:
- progress: pass@1 of the best iterate (by mean ID pass@1) above M1 beyond the CI;
- reversal signals, marked when the CI excludes zero (or the stated bound): the last iterate's
  pass@k at the largest k below M1's; a diversity measure of correct answers below M1's; an OOD
  pass@1 below M1's; pass@1 of the last iterate below the best iterate's CI (progress, then decline).
"""

from __future__ import annotations

import csv
import html
import io
from typing import Any

from reversalkit.study.tables import html_table, md_table

DIVERSITY = (("sbert", "SBERT"), ("distinct_n", "distinct-n"), ("equations", "equations"))


def fmt_gain(c: dict[str, Any] | None) -> str:
    """'+0.045 [+0.010, +0.080]' for a paired difference with its CI."""
    if not c or c.get("mean") is None:
        return "-"
    if c.get("lo") is None:
        return f"{c['mean']:+.3f}"
    return f"{c['mean']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]"


def above(c: dict[str, Any] | None) -> bool:
    return bool(c and c.get("lo") is not None and c["lo"] > 0)


def below(c: dict[str, Any] | None) -> bool:
    return bool(c and c.get("hi") is not None and c["hi"] < 0)


def _best_last(results: dict[str, Any], entries: list[dict[str, Any]]) -> tuple[dict, dict]:
    sid, rounds = results["id_split"], entries[1:]
    best = max(rounds, key=lambda e: (e["pass1"][sid]["mean"] or 0.0, -e["iteration"]))
    return best, rounds[-1]


def _gain(e: dict[str, Any], split: str) -> dict[str, Any] | None:
    return e["gain"].get(split, {}).get("pooled")


def reversal_signals(results: dict[str, Any], best: dict[str, Any], last: dict[str, Any]) -> list[str]:
    """The reversal signals of a method (see module doc), each a short phrase."""
    sid, t = results["id_split"], last["iteration"]
    found = []
    g_best, g_last = _gain(best, sid), _gain(last, sid)
    if (last is not best and g_best and g_last and g_best.get("lo") is not None
            and g_last["mean"] < g_best["lo"]):
        found.append(f"pass@1 fell after M{best['iteration']}")
    pk = last.get("gain_pass_k")
    if below(pk):
        found.append(f"pass@{pk['k']} below M1 at M{t}")
    found += [f"{name} diversity below M1 at M{t}" for key, name in DIVERSITY
              if below(last["diversity_change"].get(key))]
    found += [f"OOD {s} below M1 at M{t}" for s in results["ood_splits"] if below(_gain(last, s))]
    return found


def verdict_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per method with rounds: the Δs against M1 and the reversal signals."""
    sid, oods = results["id_split"], results["ood_splits"]
    k = next((e["gain_pass_k"]["k"] for ents in results["methods"].values() for e in ents
              if e.get("gain_pass_k")), None)
    header = ["method", "progress", f"Δ pass@1 {sid}, best iterate", f"Δ pass@1 {sid}, last iterate",
              f"Δ pass@{k or 'k'} {sid}, last", *[f"Δ {name} div. (c), last" for _, name in DIVERSITY],
              *[f"Δ pass@1 {s}, last" for s in oods], "reversal signals"]
    rows = []
    for method, entries in results["methods"].items():
        if len(entries) < 2:
            continue
        best, last = _best_last(results, entries)
        signals = reversal_signals(results, best, last)
        rows.append([
            method, "yes" if above(_gain(best, sid)) else "no",
            f"M{best['iteration']}: {fmt_gain(_gain(best, sid))}",
            f"M{last['iteration']}: {fmt_gain(_gain(last, sid))}", fmt_gain(last.get("gain_pass_k")),
            *[fmt_gain(last["diversity_change"].get(key)) for key, _ in DIVERSITY],
            *[fmt_gain(_gain(last, s)) for s in oods],
            "; ".join(signals) if signals else "none"])
    return header, rows


def verdicts(results: dict[str, Any]) -> list[str]:
    """One sentence per method: progress (best iterate vs M1), then the reversal signals at the last."""
    sid, oods = results["id_split"], results["ood_splits"]
    lines = []
    for method, entries in results["methods"].items():
        if len(entries) < 2:
            continue
        best, last = _best_last(results, entries)
        g = _gain(best, sid)
        per_seed = [c["mean"] for c in best["gain"][sid]["seeds"] if c]
        up = sum(1 for d in per_seed if d > 0)
        progress = "progress" if above(g) else "no significant progress"
        parts = [f"**{method}**: {progress}: best iterate M{best['iteration']} {fmt_gain(g)} pass@1 vs M1 "
                 f"(above M1 in {up} of {len(per_seed)} seeds)"]
        for key, name in DIVERSITY:
            c = last["diversity_change"].get(key)
            word = "lower" if below(c) else ("higher" if above(c) else "unchanged within the CI")
            parts.append(f"{name} diversity of correct answers at M{last['iteration']} {word} "
                         f"({fmt_gain(c)})")
        for s in oods:
            lg, og = _gain(last, sid), _gain(last, s)
            if lg and og:
                rel = "smaller than" if og["mean"] < lg["mean"] else "at least"
                parts.append(f"OOD {s} gain at M{last['iteration']} {fmt_gain(og)}, {rel} the ID gain "
                             f"{fmt_gain(lg)}")
        cover = best.get("m1_pass_at_n_on_is") or {}
        if cover.get("mean") is not None:
            parts.append(f"M1's pass@{cover['n']} on IS(M{best['iteration']}) {cover['mean']:.2f}")
        signals = reversal_signals(results, best, last)
        parts.append("reversal signals: " + (", ".join(signals) if signals else "none"))
        lines.append("; ".join(parts) + ".")
    return lines


def metrics_csv(results: dict[str, Any]) -> str:
    """Long format for pandas: one row per method x iteration x seed x metric (`metrics.csv`).
    Metrics: pass1_greedy_<split>, pass_at_<k>_sampled_<split> (unbiased, from the evaluation
    samples), delta_pass1_greedy_<split> (against M1 of the same seed), diversity_correct_<measure>,
    train_coverage, improved / regressed (sizes of the improvement and regression sets)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "iteration", "seed", "metric", "value"])
    seeds, sid = results["seeds"], results["id_split"]
    for method, entries in results["methods"].items():
        for e in entries:
            series = {f"pass1_greedy_{s}": v for s, v in e["pass1"].items()}
            series.update({f"pass_at_{k}_sampled_{sid}": v for k, v in e["pass_k"].items()})
            series.update({f"diversity_correct_{k}": v for k, v in e["diversity"].items()})
            series.update(train_coverage=e["train_coverage"], improved=e["improved"],
                          regressed=e["regressed"])
            for name, v in series.items():
                for seed, x in zip(seeds, v["seeds"]):
                    if x is not None:
                        w.writerow([method, e["iteration"], seed, name, x])
            gains = {f"delta_pass1_greedy_{s}": g.get("seeds", []) for s, g in e["gain"].items()}
            for name, per_seed in gains.items():
                for seed, c in zip(seeds, per_seed):
                    if c and c.get("mean") is not None:
                        w.writerow([method, e["iteration"], seed, name, c["mean"]])
    return buf.getvalue()


def verdict_sections(results: dict[str, Any]) -> tuple[list[str], str]:
    """The 'What it found' section (verdict table and sentences) as markdown lines and as HTML."""
    vheader, vrows = verdict_rows(results)
    found = verdicts(results)
    legend = ("Δ = change against M1 on the same problems, with its paired bootstrap CI over problems; "
              "(c) = within correct samples. A reversal signal is marked when its CI excludes zero "
              "(pass@1 fell: the last iterate's mean is below the best iterate's CI).")
    md = ["## What it found", "", legend, "", md_table(vheader, vrows), "", *[f"- {v}" for v in found], ""]
    items = "".join(f"<li>{html.escape(v).replace('**', '')}</li>" for v in found)
    page = (f"<h2>What it found</h2><p>{html.escape(legend)}</p>{html_table(vheader, vrows, 'verdict')}"
            f"<ul>{items}</ul>")
    return md, page
