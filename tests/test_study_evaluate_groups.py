"""Diversity on fixed-size groups, the SBERT cap, and unknown levels in `summarize_split`."""

import hashlib
import random
from types import SimpleNamespace

import numpy as np
import pytest

from reversalkit import metrics
from reversalkit.study.config import StudyConfig
from reversalkit.study.evaluate import group_disparity, summarize_split


class FakeEncoder:
    """Deterministic unit vectors from a hash of each text; records what it was asked to encode."""

    def __init__(self):
        self.seen: list[str] = []

    def encode(self, texts, **_):
        self.seen += list(texts)
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest(), dtype=np.uint8)[:8] for t in texts]
        emb = np.asarray(rows, dtype=np.float64) - 127.5
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def _text(j: int) -> str:
    # One style for every sample: shared words, so distinct-n falls as a group grows.
    return f"we add {j} and {j + 1} <<{j}+{j + 1}={2 * j + 1}>> so the answer is {2 * j + 1}"


def _split(records_by_problem, k=4, **kw):
    """summarize_split over problems p0.. with (i, text, correct) records, all greedy-correct."""
    problems = [SimpleNamespace(id=pid, meta={}) for pid in records_by_problem]
    greedy = [{"id": pid, "i": 0, "text": "", "correct": True} for pid in records_by_problem]
    samples = [{"id": pid, "i": i, "text": t, "correct": c}
               for pid, recs in records_by_problem.items() for i, t, c in recs]
    return summarize_split(problems, greedy, samples, ks=[1], n_boot=0, ci=0.95, seed=0,
                           equations=metrics.extract_equations, diversity_group_size=k, **kw)


DIV_KEYS = ("distinct_n", "equations", "unique", "sbert")


def test_groups_that_differ_only_in_size_score_equal():
    # Iterate A: 4 of 8 samples correct; iterate B: all 8 correct, the first 4 the same texts.
    a = {"p0": [(i, _text(i), i < 4) for i in range(8)]}
    b = {"p0": [(i, _text(i), True) for i in range(8)]}
    out_a, out_b = _split(a, sbert=FakeEncoder()), _split(b, sbert=FakeEncoder())
    for key in DIV_KEYS:
        da, db = out_a["diversity"]["correct"][key], out_b["diversity"]["correct"][key]
        assert da["n"] == db["n"] == 1, key
        assert da["mean"] == pytest.approx(db["mean"], rel=1e-12), key
    # Without the cut the two groups differ, so the equality above is the cut's doing.
    full_a = metrics.distinct_ngrams_avg([_text(i) for i in range(4)])
    full_b = metrics.distinct_ngrams_avg([_text(i) for i in range(8)])
    assert full_b < full_a - 0.03  # measured: 0.733 against 0.770
    assert out_a["diversity"]["correct"]["distinct_n"]["mean"] == pytest.approx(full_a, rel=1e-12)
    assert out_a["diversity_group_size"] == out_b["diversity_group_size"] == 4


def test_problem_with_fewer_than_k_samples_of_a_label_is_not_scored():
    recs = {"p0": [(i, _text(i), i < 3) for i in range(8)],    # 3 correct, 5 incorrect
            "p1": [(i, _text(i), i < 4) for i in range(8)],    # 4 correct, 4 incorrect
            "p2": [(i, _text(i), i < 6) for i in range(8)]}    # 6 correct, 2 incorrect
    out = _split(recs, sbert=FakeEncoder())
    for key in DIV_KEYS:
        assert out["diversity"]["correct"][key]["n"] == 2, key    # p1, p2
        assert out["diversity"]["incorrect"][key]["n"] == 2, key  # p0, p1
    # p1 and p2 hold the same first four correct texts: one value, twice.
    assert out["diversity"]["correct"]["unique"]["mean"] == 4.0


def test_the_k_lowest_sample_indices_are_scored_whatever_the_record_order():
    texts = {0: "no q", 1: "alpha beta gamma", 2: "beta gamma delta", 3: "gamma delta eps",
             4: "no r", 5: "alpha beta gamma", 6: "no s", 7: "zeta eta theta"}
    correct = {1, 2, 3, 5, 7}
    recs = [(i, texts[i], i in correct) for i in range(8)]
    shuffled = recs[:]
    random.Random(3).shuffle(shuffled)
    enc = FakeEncoder()
    out = _split({"p0": shuffled}, sbert=enc)
    assert _split({"p0": recs})["diversity"] == _split({"p0": shuffled})["diversity"]
    # Correct samples 1, 2, 3, 5 (not 7): sample 5 repeats sample 1, so 3 distinct texts of 4.
    assert out["diversity"]["correct"]["unique"]["mean"] == 3.0
    want = metrics.distinct_ngrams_avg([texts[i] for i in (1, 2, 3, 5)])
    assert want < metrics.distinct_ngrams_avg([texts[i] for i in (2, 3, 5, 7)]) - 0.1
    assert out["diversity"]["correct"]["distinct_n"]["mean"] == pytest.approx(want, rel=1e-12)
    # SBERT saw exactly those texts; the 3 incorrect samples are fewer than k and not encoded.
    assert set(enc.seen) == {texts[i] for i in (1, 2, 3)}


def test_group_size_is_capped_at_the_samples_per_problem():
    out = _split({"p0": [(0, "a b", True), (1, "a c", True)]}, k=4)
    assert out["diversity_group_size"] == 2
    assert out["diversity"]["correct"]["distinct_n"]["n"] == 1
    out = _split({"p0": [(0, "a b", True)]}, k=4)  # one sample per problem: no diversity at all
    assert out["diversity_group_size"] == 1
    assert all(v["n"] == 0 for g in out["diversity"].values() for v in g.values())
    with pytest.raises(ValueError, match="diversity_group_size must be >= 2"):
        _split({"p0": [(0, "a b", True)]}, k=1)


def test_sbert_cap_counts_problems_that_qualify():
    # The first five problems have 2 < k correct samples; the cap must reach past them.
    recs = {f"p{n}": [(i, _text(10 * n + i), i < (2 if n < 5 else 4)) for i in range(8)]
            for n in range(10)}
    out = _split(recs, sbert=FakeEncoder(), sbert_max_problems=3)
    assert out["diversity"]["correct"]["sbert"]["n"] == 3
    assert out["diversity"]["correct"]["distinct_n"]["n"] == 5  # the cap is SBERT's only
    assert out["diversity"]["incorrect"]["sbert"]["n"] == 3


def _levels_split(extra_levels):
    # Levels 1..3 with accuracies 1.0, 0.5, 0.25; unknown-level problems all wrong.
    spec = [(1, [1, 1, 1, 1]), (2, [1, 0, 1, 0]), (3, [1, 0, 0, 0])]
    spec += [(lv, [0, 0, 0, 0]) for lv in extra_levels]
    problems, greedy = [], []
    for n, (level, results) in enumerate(spec):
        for j, r in enumerate(results):
            pid = f"p{n}_{j}"
            meta = {} if level == "absent" else {"level": level}
            problems.append(SimpleNamespace(id=pid, meta=meta))
            greedy.append({"id": pid, "i": 0, "text": "", "correct": bool(r)})
    return summarize_split(problems, greedy, [], ks=[1], n_boot=0, ci=0.95, seed=0)


def test_an_unknown_level_changes_neither_levels_nor_disparity():
    base = _levels_split([])
    assert base["disparity"] == pytest.approx(75.0)
    for unknown in ([None], ["None"], ["Level ?"], ["absent"], [None, "Level ?", "None"]):
        out = _levels_split(unknown)
        assert out["levels"] == base["levels"], unknown
        assert out["disparity"] == pytest.approx(75.0), unknown
    assert list(_levels_split(["Level ?"])["levels"]) == ["1", "2", "3"]


def test_group_disparity_orders_levels_by_number_and_skips_unknown():
    assert group_disparity({"Level 10": 0.1, "Level 2": 0.8, "Level 5": 0.4}) == pytest.approx(87.5)
    assert group_disparity({"1": 0.8, "5": 0.2, "None": 0.0, "Level ?": 0.0}) == pytest.approx(75.0)
    assert group_disparity({"1": 0.8, "None": 0.0}) is None


def test_fixed_size_groups():
    groups = {"b": ["x", "y", "z"], "a": ["x"], "c": ["u", "v"]}
    assert metrics.fixed_size_groups(groups, 2) == {"b": ["x", "y"], "c": ["u", "v"]}
    assert list(metrics.fixed_size_groups(groups, 2)) == ["b", "c"]  # keys keep their order
    assert metrics.fixed_size_groups(groups, 4) == {}
    with pytest.raises(ValueError, match="size must be >= 1"):
        metrics.fixed_size_groups(groups, 0)
    with pytest.raises(TypeError, match="got a str"):
        metrics.fixed_size_groups({"a": "xyz"}, 2)


def test_config_diversity_group_size():
    assert StudyConfig().diversity_group_size == 4
    with pytest.raises(ValueError, match="diversity_group_size must be >= 2.*got 1"):
        StudyConfig(diversity_group_size=1)
