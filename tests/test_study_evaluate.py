"""Evaluation aggregation on fake samples, against direct computations."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from reversalkit import metrics
from reversalkit.study.evaluate import (
    coverage_summary,
    group_disparity,
    summarize_split,
    transition_summary,
)


def _problems():
    return [SimpleNamespace(id=f"p{i}", meta={"level": 1 + i % 3}) for i in range(6)]


def _records():
    greedy = [{"id": f"p{i}", "i": 0, "text": "g", "correct": i in (0, 1, 3)} for i in range(6)]
    texts = {
        "p0": [("a b c <<1+1=2>>", 1), ("a b d <<1+1=2>>", 1), ("x y", 0), ("a b c <<2*1=2>>", 1)],
        "p1": [("q", 0), ("r s", 0), ("q", 0), ("t", 1)],
        "p2": [("u v", 0)] * 4,
        "p3": [("k l m", 1)] * 4,
        "p4": [("w", 1), ("w z <<3=3>>", 1), ("n", 0), ("o", 0)],
        "p5": [("h", 0), ("i", 0), ("j", 0), ("k", 1)],
    }
    samples = [{"id": pid, "i": i, "text": t, "correct": bool(c)} for pid, items in texts.items()
               for i, (t, c) in enumerate(items)]
    return greedy, samples, texts


def _comb_pass_at_k(n, c, k):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def test_summarize_split_values():
    greedy, samples, texts = _records()
    eqs = metrics.extract_equations
    out = summarize_split(_problems(), greedy, samples, ks=[1, 2, 4, 8], n_boot=200, ci=0.9, seed=0,
                          equations=eqs, diversity_group_size=2)
    assert out["n"] == 6
    assert out["pass1"]["mean"] == pytest.approx(3 / 6)
    assert out["pass1"]["lo"] <= 0.5 <= out["pass1"]["hi"]
    cs = {pid: sum(c for _, c in items) for pid, items in texts.items()}
    for k in (1, 2, 4):
        want = np.mean([_comb_pass_at_k(4, cs[f"p{i}"], k) for i in range(6)])
        assert out["pass_k"][str(k)]["mean"] == pytest.approx(want, rel=1e-12)
    assert "8" not in out["pass_k"]  # more than the 4 samples drawn
    assert out["sample_accuracy"]["mean"] == pytest.approx(np.mean([cs[f"p{i}"] / 4 for i in range(6)]))
    assert out["diversity_group_size"] == 2
    corr = out["diversity"]["correct"]
    # problems with >= 2 correct samples, cut to the 2 lowest indices: p0 (samples 0, 1 of its
    # 3 correct), p3 (2 identical), p4 (2)
    groups = [[t for t, c in texts[p] if c][:2] for p in ("p0", "p3", "p4")]
    want_dn = np.mean([metrics.distinct_ngrams_avg(g) for g in groups])
    assert corr["distinct_n"]["mean"] == pytest.approx(want_dn)
    assert corr["distinct_n"]["n"] == 3
    # unique: distinct texts of the same groups
    assert corr["unique"]["mean"] == pytest.approx(np.mean([2, 1, 2])) and corr["unique"]["n"] == 3
    # equations: p0's two kept texts hold 1+1=2 twice; p4 one equation; p3 none (no value)
    assert corr["equations"]["n"] == 2
    assert corr["equations"]["mean"] == pytest.approx(np.mean([1 / 2, 1.0]))
    inc = out["diversity"]["incorrect"]
    assert inc["unique"]["n"] == 4 and inc["distinct_n"]["n"] == 4  # p0 has only one incorrect text
    assert corr["sbert"]["n"] == 0  # SBERT off here
    assert out["levels"] == {"1": {"n": 2, "pass1": 1.0}, "2": {"n": 2, "pass1": 0.5},
                             "3": {"n": 2, "pass1": 0.0}}
    assert out["disparity"] == pytest.approx(100.0)


def test_summarize_greedy_only_and_missing():
    greedy, _, _ = _records()
    out = summarize_split(_problems(), greedy, [], ks=[1], n_boot=0, ci=0.95, seed=0)
    assert out["pass1"] == {"mean": 0.5, "lo": None, "hi": None, "n": 6}
    assert "pass_k" not in out and "diversity" not in out
    with pytest.raises(ValueError, match="no greedy record"):
        summarize_split(_problems(), greedy[:3], [], ks=[1], n_boot=0, ci=0.95, seed=0)


def test_transitions_and_coverage():
    greedy, samples, texts = _records()
    cur = [dict(r, correct=r["id"] in ("p0", "p2", "p5")) for r in greedy]
    tr = transition_summary(greedy, cur, samples, ks=[1, 2, 4])
    assert tr["improved"] == 2 and tr["regressed"] == 2 and tr["stable_correct"] == 1
    # M1's pass@N over IS = {p2 (0/4 correct), p5 (1/4)}
    assert tr["m1_pass_at_n_on_is"]["1"] == pytest.approx((0 + 0.25) / 2)
    assert tr["m1_pass_at_n_on_is"]["4"] == pytest.approx(0.5)
    cov = coverage_summary(samples, n_boot=100, ci=0.95, seed=0)
    assert cov["coverage"]["mean"] == pytest.approx(np.mean([3 / 4, 1 / 4, 0, 1, 2 / 4, 1 / 4]))
    assert cov["solved_any"] == 5 and cov["samples"] == 24


def test_group_disparity():
    assert group_disparity({"Level 1": 0.8, "Level 5": 0.2, "Level 3": 0.5}) == pytest.approx(75.0)
    assert group_disparity({"1": 0.0, "2": 0.5}) is None
    assert group_disparity({"1": 0.5}) is None
