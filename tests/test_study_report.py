"""Report and tables from synthetic results: files, best-iterate choice, terminal summary values."""

import logging
import random

import pytest

from reversalkit.study.report import plot_levels, plot_pass_k, write_report
from reversalkit.study.tables import best_iterates, fmt_ci, summary_rows, terminal_summary


def _ci(m, w=0.02):
    return {"mean": m, "lo": m - w, "hi": m + w}


def fake_results(pass1=None, levels=True):
    rng = random.Random(0)
    pass1 = pass1 or {"sft": [0.30, 0.42, 0.47, 0.40, 0.36], "dpo": [0.30, 0.35, 0.38, 0.41, 0.39],
                      "sft_dpo": [0.30, 0.42, 0.45, 0.45, 0.44]}
    methods = {}
    for method, curve in pass1.items():
        entries = []
        for t, p in enumerate(curve, start=1):
            div = {g: {k: _ci(rng.uniform(0.1, 0.8)) for k in ("distinct_n", "sbert", "equations", "unique")}
                   for g in ("correct", "incorrect")}
            ev = {"id": {"n": 100, "pass1": _ci(p), "pass_k": {"1": _ci(p), "4": _ci(min(1, 2 * p))},
                         "diversity": div,
                         "levels": {"2": {"n": 50, "pass1": p + 0.1}, "3": {"n": 50, "pass1": p - 0.1}}
                         if levels else {}},
                  "test_ood": {"n": 100, "pass1": _ci(p / 4)}}
            curve_is = {"1": 0.2, "2": 0.5, "4": 0.9}
            e = {"iteration": t, "node": f"n{t}", "round": None if t == 1 else method, "eval": ev,
                 "transitions": {} if t == 1 else {"id": {"improved": t * 3, "regressed": t,
                                                         "m1_pass_at_n_on_is": curve_is}},
                 "train_coverage": _ci(0.3 + 0.05 * t) if t < len(curve) else None}
            entries.append(e)
        methods[method] = entries
    return {"task": "synthetic", "model": "tiny", "iterations": 5, "id_split": "id",
            "ood_splits": ["test_ood"], "ks": [1, 4], "m1_coverage": _ci(0.35), "methods": methods}


def test_best_iterate_is_argmax_of_id_pass1():
    res = fake_results()
    _, rows = best_iterates(res)
    by_method = {r[0]: r for r in rows}
    assert by_method["sft"][1] == "3"
    assert by_method["dpo"][1] == "4"
    # ties go to the earliest iterate: sft_dpo has 0.45 at iterations 3 and 4
    assert by_method["sft_dpo"][1] == "3"
    assert by_method["sft"][2] == "0.300 -> 0.470"


def test_summary_rows_values():
    res = fake_results()
    header, rows = summary_rows(res)
    assert len(rows) == 15
    row = rows[2]  # sft, iteration 3
    assert row[:4] == ["sft", "3", "sft", "0.470"]
    assert row[header.index("pass@1 test_ood")] == f"{0.47 / 4:.3f}"
    assert row[header.index("IS")] == "9" and row[header.index("RS")] == "3"
    assert rows[0][header.index("IS")] == "-"
    text = terminal_summary(res)
    assert "0.470" in text and "M1 train coverage 0.350 [0.330, 0.370]" in text


def test_fmt_ci():
    assert fmt_ci(None) == "-"
    assert fmt_ci({"mean": 0.5, "lo": None, "hi": None}) == "0.500"
    assert fmt_ci({"mean": 0.5, "lo": 0.4, "hi": 0.6}, 2) == "0.50 [0.40, 0.60]"


@pytest.mark.filterwarnings("error")
def test_write_report_files(tmp_path, caplog):
    res = fake_results()
    with caplog.at_level(logging.INFO, logger="matplotlib"):
        md = write_report(res, tmp_path)
    # matplotlib logs (not warns) when it has to guess units, e.g. level labels "2", "3" on an axis
    assert not [r.message for r in caplog.records if r.name.startswith("matplotlib")]
    names = {p.name for p in tmp_path.iterdir()}
    for png in ("pass1.png", "diversity.png", "transitions.png", "coverage.png", "pass_k.png", "levels.png"):
        assert png in names
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert "Best iterate per method" in text and "![pass@1 per iteration](pass1.png)" in text
    assert "0.300 -> 0.470" in text
    page = (tmp_path / "index.html").read_text()
    assert page.count("<img") == 6 and "<table>" in page


def test_no_level_or_pass_k_plot_without_data(tmp_path):
    res = fake_results(levels=False)
    for entries in res["methods"].values():
        for e in entries:
            e["eval"]["id"].pop("pass_k")
    assert plot_levels(res, tmp_path) is None and plot_pass_k(res, tmp_path) is None
    assert list(tmp_path.iterdir()) == []
