"""The shrunken study under `torchrun --nproc-per-node 2` (gloo, CPU) gives one process's results.

Sampled and evaluated texts are identical (a sample's random stream depends on its prompt, index
and seed only, and each rank's engine runs its own shard); training losses agree within the golden
trajectories' tolerance; every metric agrees to printed precision. A second test kills rank 1 in
the middle of a round, resumes from a single process (killed in turn in the next round), finishes
with 2 ranks and gets the same table; the finished run then resumes from a single process with
nothing left to do.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import signal

import pytest
from test_dist_train import torchrun
from test_study_resume import micro_config
from test_train_golden import RTOL

from reversalkit.study import Study
from reversalkit.tasks import REGISTRY

SHRINK = ["methods=[sft, dpo]", "iterations=2",
          "m1_train={lr: 3.0e-3, epochs: 100, max_steps: 20, batch_size: 16, max_length: 64}"]


def study_config(out_dir, overrides=()):
    return micro_config(out_dir).with_overrides([*SHRINK, *overrides])


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    results = Study(study_config(out), print_summary=False).run()
    yield out, results
    REGISTRY.unregister("easysum")


def _texts(run, rel):
    return [(r["id"], r["i"], r["text"]) for r in
            (json.loads(line) for line in gzip.decompress((run / rel).read_bytes()).decode().splitlines())]


def _rounded(obj, digits=3):
    """The numbers of a results tree as printed (3 decimals), timings dropped."""
    if isinstance(obj, dict):
        skip = ("seconds", "cpu_seconds", "finished")
        return {k: _rounded(v, digits) for k, v in obj.items() if k not in skip}
    if isinstance(obj, list):
        return [_rounded(v, digits) for v in obj]
    if isinstance(obj, float):
        return None if math.isnan(obj) else round(obj, digits)
    return obj


def _losses(run):
    out = {}
    for path in sorted((run / "nodes").glob("*/round.json")):
        train = json.loads(path.read_text())["train"]
        out[path.parent.name] = train.get("losses", [])
    return out


def _same_as_single(one, two, one_results):
    one_results = copy.deepcopy(one_results)
    for rel in ("nodes/m1/train_samples.jsonl.gz", "nodes/m1/eval/id.samples.jsonl.gz",
                "nodes/m1/eval/id.greedy.jsonl.gz", "nodes/m1-s/eval/id.samples.jsonl.gz",
                "nodes/m1-d/eval/id.greedy.jsonl.gz"):
        assert _texts(two, rel) == _texts(one, rel), rel
    a, b = _losses(one), _losses(two)
    assert a.keys() == b.keys() and a["m1"]
    for node in a:
        assert b[node] == pytest.approx(a[node], rel=RTOL["dpo"]), node
    two_results = json.loads((two / "results.json").read_text())
    # training records: losses above; DPO's reward accuracy compares rounding noise at step 0
    # (policy == reference), real margins after it
    for method, entries in one_results["methods"].items():
        for e1, e2 in zip(entries, two_results["methods"][method]):
            t1, t2 = e1.pop("train", None) or {}, e2.pop("train", None) or {}
            assert (t1.get("reward_accuracy") or [None])[1:] == (t2.get("reward_accuracy") or [None])[1:]
    assert _rounded(two_results["methods"]) == _rounded(one_results["methods"])


@pytest.mark.timeout(600)
def test_two_ranks_give_the_single_process_study(single_run, tmp_path):
    one, one_results = single_run
    proc = torchrun(2, "study", str(tmp_path / "two"), timeout=540)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _same_as_single(one, tmp_path / "two", one_results)
    assert (tmp_path / "two" / "report" / "report.md").exists()


@pytest.mark.timeout(600)
def test_a_killed_rank_ends_the_job_and_a_relaunch_finishes_it(single_run, tmp_path):
    one, one_results = single_run
    run = tmp_path / "killed"
    # rank 1 dies as the SFT round's training starts, after M1's samples landed
    proc = torchrun(2, "study", str(run), env={"KILL_RANK": "1", "KILL_AT": "m1-s/train"}, timeout=540)
    assert proc.returncode != 0
    assert "rank 1" in proc.stderr or "local_rank: 1" in proc.stderr
    assert f"Signal {int(signal.SIGKILL)}" in proc.stderr or "SIGKILL" in proc.stderr
    steps = json.loads((run / "manifest.json").read_text())["steps"]
    assert "m1/sample" in steps and "m1-s/train" not in steps
    assert not list(run.rglob("*.tmp")) and not (run / "results.json").exists()
    log = (run / "study.log").read_text()
    # rank 0 names the step it was in when rank 1 vanished: from gloo's error or torchrun's SIGTERM,
    # whichever came first
    assert "rank 0 of 2: step m1-s/train failed" in log or "SIGTERM) in step m1-s/train" in log
    # a single process resumes it (another world size) and is killed in turn, in the DPO round
    proc = torchrun(1, "study", str(run), env={"KILL_RANK": "0", "KILL_AT": "m1-d/train"}, timeout=540)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-4000:]
    steps = json.loads((run / "manifest.json").read_text())["steps"]
    assert "m1-s/eval" in steps and "world" not in steps["m1-s/train"] and "m1-d/train" not in steps
    # 2 ranks finish it
    proc = torchrun(2, "study", str(run), timeout=540)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads((run / "manifest.json").read_text())["steps"]["m1-d/train"]["world"] == 2
    _same_as_single(one, run, one_results)
    # a finished run resumes from a single process with nothing left to do
    events = []
    Study(study_config(run), on_event=lambda k, n: events.append(k), print_summary=False).run()
    assert "step_start" not in events
