"""Text tables of a study's results: per-iteration summary, best iterates, paper reference numbers.

Shared by the terminal summary, report.md and index.html; input is the `results` dict of
`reversalkit.study.results.collect_results`.
"""

from __future__ import annotations

import html
from typing import Any


def fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def fmt_ci(c: dict[str, Any] | None, digits: int = 3) -> str:
    """'0.412 [0.380, 0.445]' (or just the mean when there is no interval)."""
    if not c or c.get("mean") is None:
        return "-"
    if c.get("lo") is None:
        return fmt(c["mean"], digits)
    return f"{c['mean']:.{digits}f} [{c['lo']:.{digits}f}, {c['hi']:.{digits}f}]"


def _mean(c: dict[str, Any] | None) -> float | None:
    return None if not c else c.get("mean")


def _div(e: dict[str, Any], split: str, group: str, key: str) -> dict[str, Any] | None:
    return e["eval"].get(split, {}).get("diversity", {}).get(group, {}).get(key)


def _top_pass_at_n(tr: dict[str, Any] | None) -> str:
    """'0.95 (N=8)': M1's pass@N on the improvement set at the largest N measured."""
    curve = (tr or {}).get("m1_pass_at_n_on_is") or {}
    if not curve:
        return "-"
    n = max(curve, key=int)
    return f"{curve[n]:.2f} (N={n})"


def summary_rows(results: dict[str, Any], *, with_ci: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per method and iteration."""
    sid, oods = results["id_split"], results["ood_splits"]
    f = fmt_ci if with_ci else (lambda c: fmt(_mean(c)))
    header = ["method", "iter", "round", f"pass@1 {sid}", *[f"pass@1 {s}" for s in oods],
              "distinct-1..5 (c)", "SBERT (c)", "eqs (c)", "distinct texts (c)", "scored (c)",
              "distinct-1..5 (i)", "IS", "RS", "M1 pass@N on IS", "train cov"]
    rows = []
    for method, entries in results["methods"].items():
        for e in entries:
            tr = e.get("transitions", {}).get(sid)
            rows.append([
                method, str(e["iteration"]), e.get("round") or "M1",
                f(e["eval"].get(sid, {}).get("pass1")),
                *[f(e["eval"].get(s, {}).get("pass1")) for s in oods],
                f(_div(e, sid, "correct", "distinct_n")), f(_div(e, sid, "correct", "sbert")),
                f(_div(e, sid, "correct", "equations")), f(_div(e, sid, "correct", "unique")),
                str((_div(e, sid, "correct", "distinct_n") or {}).get("n", "-")),
                f(_div(e, sid, "incorrect", "distinct_n")),
                str(tr["improved"]) if tr else "-", str(tr["regressed"]) if tr else "-",
                _top_pass_at_n(tr), fmt(_mean(e.get("train_coverage"))),
            ])
    return header, rows


def best_iterates(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per method: the iterate with the highest ID greedy pass@1 (earliest on ties) vs M1."""
    sid, oods = results["id_split"], results["ood_splits"]
    header = ["method", "best iter", f"pass@1 {sid} (M1 -> best)",
              *[f"pass@1 {s} (M1 -> best)" for s in oods],
              "distinct-1..5 (c) (M1 -> best)", "SBERT (c) (M1 -> best)", "IS", "RS"]
    rows = []
    for method, entries in results["methods"].items():
        scored = [(e, _mean(e["eval"].get(sid, {}).get("pass1"))) for e in entries]
        scored = [(e, v) for e, v in scored if v is not None]
        if not scored:
            continue
        best = max(scored, key=lambda ev: (ev[1], -ev[0]["iteration"]))[0]
        m1 = entries[0]

        def pair(getter, m1=m1, best=best):
            return f"{fmt(_mean(getter(m1)))} -> {fmt(_mean(getter(best)))}"

        tr = best.get("transitions", {}).get(sid)
        rows.append([
            method, str(best["iteration"]), pair(lambda e: e["eval"].get(sid, {}).get("pass1")),
            *[pair(lambda e, s=s: e["eval"].get(s, {}).get("pass1")) for s in oods],
            pair(lambda e: _div(e, sid, "correct", "distinct_n")),
            pair(lambda e: _div(e, sid, "correct", "sbert")),
            str(tr["improved"]) if tr else "-", str(tr["regressed"]) if tr else "-",
        ])
    return header, rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
                      *["| " + " | ".join(r) + " |" for r in rows]])


def html_table(header: list[str], rows: list[list[str]], table_id: str = "") -> str:
    """An HTML table, cells escaped; `table_id` names it for links and tests."""
    attr = f" id='{table_id}'" if table_id else ""
    return (f"<table{attr}><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
            + "</table>")


def terminal_summary(results: dict[str, Any]) -> str:
    """The compact table printed at the end of a study."""
    header, rows = summary_rows(results)
    cov = results.get("m1_coverage")
    return (f"study: {results.get('task')} / {results.get('model')}  M1 train coverage {fmt_ci(cov)}\n"
            "(c) = within correct samples, (i) = within incorrect samples, on groups of k samples per "
            "problem (scored = problems with k); IS/RS vs M1 on the ID test set\n"
            + format_table(header, rows))


PAPER_GSM8K = """\
Paper (arXiv 2407.05013), GSM8K, read off its figures:
- pass@1 M1 -> best iterate: LLaMA2-7B 41.6 -> 53.9 (SFT) / 48.5 (DPO) / 52.9 (SFT-DPO);
  Mistral-7B 61.8 -> 68.9 / 71.0 / 72.8; LLaMA3-8B 66.4 -> 69.1 / 71.0 / 73.3.
- LLaMA2-7B Iterative SFT by iteration: 41.6, 49.2, 53.9, 51.3, 49.6 (peak, then down).
- Coverage of M1 on train: LLaMA2 .40, Mistral .63, LLaMA3 .80 (above .5 favoured DPO / SFT-DPO).
- Diversity of correct answers, iteration 1 -> 5: Iterative SFT SBERT 0.71 -> 0.43, distinct-n 0.42 -> 0.16;
  Iterative DPO SBERT 0.71 -> 0.58, distinct-n 0.42 -> 0.27.
- OOD (Mistral-7B, GSM8K -> MATH): Iterative SFT MATH 15.3 -> 11.8 while GSM8K 61.8 -> 66.5.
- M1's pass@N on IS(t) for N = 2..64: near 100% on CSQA and GSM8K, 81-96% on MATH."""

PAPER_GENERAL = """\
The paper's claim (arXiv 2407.05013): iterative post-training on self-samples raises pass@1, but the
gains are mostly answer selection inside M1's generation space (M1's pass@N on IS(t) near 100% on
CSQA/GSM8K), while diversity of correct answers falls and OOD accuracy can fall. Its GSM8K trend,
for comparison of directions (absolute values do not transfer to other tasks or model sizes):
Iterative SFT SBERT 0.71 -> 0.43, distinct-n 0.42 -> 0.16 over iterations 1 -> 5;
Iterative DPO SBERT 0.71 -> 0.58, distinct-n 0.42 -> 0.27; coverage of M1 .40-.80 on GSM8K
(CSQA .83-.88, MATH .14-.28, MBPP .54-.63)."""


def paper_reference(results: dict[str, Any]) -> str:
    """The PAPER.md numbers relevant to this study's task."""
    return PAPER_GSM8K if results.get("task") == "gsm8k" else PAPER_GENERAL
