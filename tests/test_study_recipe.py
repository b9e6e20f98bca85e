"""Recipe pieces of a study on the micro task: a user's own M1, the gold control arm, fresh
problems per round, and the dev split as the ID evaluation set (seeds: test_study_outputs.py)."""

import json
from types import SimpleNamespace

import pytest
from test_study_resume import micro_config

from reversalkit.study import Study
from reversalkit.study.stages import gold_in_place, round_data
from reversalkit.study.workspace import Workspace
from reversalkit.tasks import REGISTRY


@pytest.fixture
def easysum():
    yield
    REGISTRY.unregister("easysum")


def _weights(run_dir, node):
    files = sorted((run_dir / "nodes" / node / "model").glob("*.safetensors"))
    return b"".join(p.read_bytes() for p in files)


@pytest.mark.timeout(300)
def test_own_m1_and_gold_control_arm(tmp_path, easysum):
    first = micro_config(tmp_path / "a").with_overrides(["iterations=1"])
    base = Study(first, print_summary=False).run()
    m1_dir = tmp_path / "a" / "nodes" / "m1" / "model"

    cfg = micro_config(tmp_path / "b").with_overrides([f"m1={m1_dir}", "methods=[gold, sft]"])
    events = []
    res = Study(cfg, on_event=lambda k, n: events.append((k, n)), print_summary=False).run()
    b = tmp_path / "b"
    # M1 is the given model, stored as given, not trained; it evaluates as in the run that made it
    assert _weights(b, "m1") == _weights(tmp_path / "a", "m1")
    round_m1 = json.loads((b / "nodes" / "m1" / "round.json").read_text())
    assert round_m1["train"] == {"source": str(m1_dir), "steps": 0}
    assert res["methods"]["sft"][0]["eval"] == base["methods"]["sft"][0]["eval"]

    # the control arm ran after SFT (it needs SFT's samples) and trained on the same problems, as
    # many examples each, in as many steps
    started = [n for k, n in events if k == "step_start"]
    assert started.index("m1-g/train") > started.index("m1-s/train")
    assert started.count("m1/sample") == 1 and started.count("m1-s/sample") == 1
    for sft_node, gold_node in (("m1-s", "m1-g"), ("m1-ss", "m1-gg")):
        s = json.loads((b / "nodes" / sft_node / "round.json").read_text())
        g = json.loads((b / "nodes" / gold_node / "round.json").read_text())
        assert g["data"] == s["data"] and g["train"]["steps"] == s["train"]["steps"] > 0
    assert [e["node"] for e in res["methods"]["gold"]] == ["m1", "m1-g", "m1-gg"]


def test_gold_in_place_keeps_problems_and_counts():
    problems = {"a": SimpleNamespace(meta={"solutions": ("a1", "a2")}, solution="a1", answer="1"),
                "b": SimpleNamespace(meta={}, solution="b1", answer="2")}
    kept = [("a", "x"), ("a", "y"), ("a", "z"), ("b", "w")]
    assert gold_in_place(kept, problems) == [("a", "a1"), ("a", "a2"), ("a", "a1"), ("b", "b1")]


def test_gold_round_data_uses_gold_text(easysum):
    cfg = micro_config("unused")
    task = REGISTRY.create("easysum")
    problems = {str(p.id): p for p in task.load("train")}
    pid = next(iter(problems))
    samples = [{"id": pid, "i": i, "text": f"wrong {i}", "correct": i < 3} for i in range(4)]
    sft, sft_stats = round_data(cfg, "sft", "m1-s", samples, problems, task)
    gold, gold_stats = round_data(cfg, "gold", "m1-g", samples, problems, task)
    assert sft_stats == gold_stats == {"examples": 3, "problems": 1}
    assert [e.completion for e in sft] == ["wrong 0", "wrong 1", "wrong 2"]
    assert {e.completion for e in gold} <= set(problems[pid].meta["solutions"])


def _ws(cfg, train):
    return SimpleNamespace(cfg=cfg, train=train)


@pytest.mark.parametrize("size", [3, 5])
def test_fresh_draw_gives_new_problems_per_iteration(size, easysum):
    cfg = micro_config("unused").with_overrides(["sample_draw=fresh", f"sample_size={size}"])
    train = list(range(24))
    draws = [Workspace.sample_problems(_ws(cfg, train), t) for t in range(1, 5)]
    assert all(len(d) == size for d in draws)
    assert len({x for d in draws for x in d}) == 4 * size  # disjoint while the train set lasts
    assert draws == [Workspace.sample_problems(_ws(cfg, train), t) for t in range(1, 5)]
    other = micro_config("unused").with_overrides(["sample_draw=fresh", f"sample_size={size}", "seed=1"])
    assert Workspace.sample_problems(_ws(other, train), 1) != draws[0]
    # blocks wrap around when the set is used up; 'fixed' is the first N every round
    assert Workspace.sample_problems(_ws(cfg, train), 1 + 24 // size) == draws[0]
    fixed = micro_config("unused").with_overrides([f"sample_size={size}"])
    assert Workspace.sample_problems(_ws(fixed, train), 3) == train[:size]


def test_id_split_reports_on_the_named_split(easysum):
    from reversalkit.study.workspace import load_eval_sets

    cfg = micro_config("unused").with_overrides(["id_split=train", "ood_tasks=[]"])
    task = REGISTRY.create("easysum")
    sets = load_eval_sets(cfg, task)
    assert list(sets) == ["id"] and [p.id for p in sets["id"][1]] == [p.id for p in task.load("train")]
