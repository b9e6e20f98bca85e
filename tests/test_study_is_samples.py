"""M1's extra samples for its pass@N on the improvement sets (`m1_is_samples`): drawn once, in a
step of their own, and used for that curve only."""

import gzip
import json
from collections import Counter
from math import comb

import pytest
from test_study_resume import micro_config

from reversalkit.study import Study, StudyConfig
from reversalkit.tasks import REGISTRY


def _records(path):
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh]


def _pass_at_k(n: int, c: int, k: int) -> float:
    return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("is_samples")
    # seed 6: this micro study's M2 solves test problems its M1 missed, so the curve exists
    cfg = micro_config(root / "plain").with_overrides(["iterations=2", "methods=[sft]", "seed=6"])
    plain = Study(cfg, print_summary=False).run()
    more_cfg = cfg.replace(out_dir=str(root / "more"), m1_is_samples=16)
    more = Study(more_cfg, print_summary=False).run()
    yield root, plain, more
    REGISTRY.unregister("easysum")


def test_extra_samples_are_a_step_of_their_own(two_runs):
    root, _, _ = two_runs
    steps = {name: json.loads((root / name / "manifest.json").read_text())["steps"]
             for name in ("plain", "more")}
    assert "m1/is" in steps["more"] and "m1/is" not in steps["plain"]
    m1 = root / "more" / "nodes" / "m1" / "eval"
    extra, regular = _records(m1 / "id.is_samples.jsonl.gz"), _records(m1 / "id.samples.jsonl.gz")
    greedy_ids = [r["id"] for r in _records(m1 / "id.greedy.jsonl.gz")]
    assert Counter(r["id"] for r in extra) == {pid: 12 for pid in greedy_ids}  # 16 - eval_samples 4
    assert all("correct" in r for r in extra)
    # their own random stream: not a copy of the evaluation samples
    assert [r["text"] for r in extra[:4]] != [r["text"] for r in regular[:4]] or \
        [r["text"] for r in extra[4:8]] != [r["text"] for r in regular[:4]]


def test_every_other_number_is_unchanged(two_runs):
    _, plain, more = two_runs
    for a, b in zip(plain["methods"]["sft"], more["methods"]["sft"], strict=True):
        assert a["eval"] == b["eval"]
        ta, tb = dict(a.get("transitions") or {}), dict(b.get("transitions") or {})
        for t in (ta, tb):
            for split in t.values():
                split.pop("m1_pass_at_n_on_is", None)
        assert ta == tb


def test_the_curve_counts_all_of_m1s_samples(two_runs):
    root, _, more = two_runs
    run = root / "more" / "nodes"
    m1 = {r["id"]: r["correct"] for r in _records(run / "m1" / "eval" / "id.greedy.jsonl.gz")}
    cur = {r["id"]: r["correct"] for r in _records(run / "m1-s" / "eval" / "id.greedy.jsonl.gz")}
    improved = sorted(pid for pid in m1 if cur[pid] and not m1[pid])
    samples = _records(run / "m1" / "eval" / "id.samples.jsonl.gz") + \
        _records(run / "m1" / "eval" / "id.is_samples.jsonl.gz")
    n = Counter(r["id"] for r in samples)
    c = Counter(r["id"] for r in samples if r["correct"])
    transitions = json.loads((run / "m1-s" / "eval.json").read_text())["transitions"]["id"]
    curve = transitions.get("m1_pass_at_n_on_is")
    assert improved, "the fixture's M2 must solve problems M1 missed; pick another seed if this moved"
    assert sorted(curve, key=int) == ["1", "2", "4", "8", "16"]
    for k, value in curve.items():
        expect = sum(_pass_at_k(n[p], c[p], int(k)) for p in improved) / len(improved)
        assert value == pytest.approx(expect, abs=1e-12), k


def test_is_ks():
    cfg = StudyConfig(eval_samples=8, pass_k=(1, 2, 4, 8))
    assert cfg.is_ks() == cfg.ks == (1, 2, 4, 8)
    assert cfg.replace(m1_is_samples=64).is_ks() == (1, 2, 4, 8, 16, 32, 64)
    assert cfg.replace(m1_is_samples=4).is_ks() == (1, 2, 4, 8)  # fewer than eval_samples: nothing extra
    odd = StudyConfig(eval_samples=50, pass_k=(1, 10, 50), m1_is_samples=100)
    assert odd.is_ks() == (1, 2, 4, 8, 10, 16, 32, 50, 64, 100)
    with pytest.raises(ValueError, match="m1_is_samples must be >= 0"):
        StudyConfig(m1_is_samples=-1)


def _pooled_entry(iteration: int, is_curve: dict | None) -> dict:
    none = {"mean": None, "seeds": [None]}
    return {"iteration": iteration, "pass1": {"id": {"mean": 0.2, "seeds": [0.2]}}, "gain": {},
            "improved": none, "regressed": none, "m1_pass_at_n_on_is": is_curve,
            "diversity": {k: none for k in ("sbert", "distinct_n", "equations")}, "diversity_change": {},
            "train_coverage": none}


def test_pooled_table_names_the_n_its_values_are_at():
    from reversalkit.study.pooled_report import main_rows

    results = {"id_split": "id", "ood_splits": [], "methods": {"sft": [
        _pooled_entry(1, {"mean": None, "seeds": [None], "n": 8}),  # M1's own row: nothing to measure
        _pooled_entry(2, {"mean": 0.9, "seeds": [0.9], "n": 64}),
        _pooled_entry(3, {"mean": 0.7, "seeds": [0.7], "n": 8}),  # a seed without M1's extra samples
    ]}}
    header, rows = main_rows(results)
    col = header.index("M1 pass@64 on IS")
    assert [r[col] for r in rows] == ["-", "0.900", "0.700 (N=8)"]


def test_pooled_results_carry_each_seeds_curve(tmp_path):
    """Seeds 6 and 7 of this micro study both have an improvement set at M2: the pooled entry holds
    the curve at every N both seeds measured, each seed's value as its own run has it."""
    cfg = micro_config(tmp_path / "pooled").with_overrides(["iterations=2", "methods=[sft]", "seeds=[6, 7]",
                                                              "m1_is_samples=16"])
    pooled = Study(cfg, print_summary=False).run()
    own = [json.loads((tmp_path / "pooled" / f"seed{s}" / "results.json").read_text()) for s in (6, 7)]
    curves = [r["methods"]["sft"][1]["transitions"]["id"]["m1_pass_at_n_on_is"] for r in own]
    entry = pooled["methods"]["sft"][1]
    assert list(entry["m1_pass_at_n_on_is_curve"]) == ["1", "2", "4", "8", "16"]
    for n, v in entry["m1_pass_at_n_on_is_curve"].items():
        assert v["seeds"] == [c[n] for c in curves]
        assert v["mean"] == pytest.approx(sum(v["seeds"]) / 2, abs=1e-12)
    assert entry["m1_pass_at_n_on_is"]["n"] == 16
    assert "m1_pass_at_n_on_is_curve" not in pooled["methods"]["sft"][0]  # M1's own row: no IS
    assert (tmp_path / "pooled" / "report" / "reversal.png").stat().st_size > 0
