"""End to end on a micro study: a run SIGKILLed mid-round resumes to the same numbers.

Run A goes through uninterrupted. Run B runs in a subprocess that kills itself with SIGKILL right
after a DPO round's checkpoint lands, before the manifest records that step (the worst moment:
artifacts of an unfinished step on disk). Rerunning B must redo that step and finish with results
and final checkpoints identical to A's.
"""

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from reversalkit import cli
from reversalkit.study import Study, StudyConfig
from reversalkit.tasks import REGISTRY, Problem, PromptedTask, extract, register_task, task_names


class EasySumTask(PromptedTask):
    """A task small enough that a 12-step model gets some answers right: sums of small numbers.

    Defined here, outside the package, which is also how a user runs a study on their own task."""

    name = "easysum"

    def load(self, split):
        rng = random.Random(split)
        size, terms = {"train": (24, 2), "test": (10, 2), "test_ood": (6, 3)}[split]
        out = []
        for i in range(size):
            xs = [rng.randint(0, 2) for _ in range(terms)]
            expr, total = " + ".join(map(str, xs)), sum(xs)
            sols = tuple(f"{e} = <<{e.replace(' ', '')}={total}>>{total}\n#### {total}"
                         for e in (expr, " + ".join(map(str, reversed(xs)))))
            out.append(Problem(f"{split}/{i}", f"What is {' plus '.join(map(str, xs))} ?", str(total),
                               sols[0], {"solutions": sols, "level": terms}))
        return out

    def render_question(self, problem):
        return f"Question: {problem.prompt}\nAnswer:"

    def extract_answer(self, text):
        return extract.extract_number_answer(text)

    def is_correct(self, problem, text):
        return extract.numbers_equal(self.extract_answer(text), problem.answer)

    def equations(self, text):
        return extract.equations(text)


MICRO = [
    "task=easysum", "task_options={}", "num_threads=1", "seeds=[]", "methods=[sft, dpo, sft_dpo]",
    "sample_draw=fixed", "dpo_train.nll_weight=0.0",
    "tiny_model={hidden_size: 32, num_layers: 2, num_heads: 2, num_kv_heads: 1, max_number: 99}",
    "iterations=3", "samples_per_problem=4",
    "eval_samples=4", "m1_is_samples=0", "pass_k=[1, 2, 4]", "max_new_tokens=24", "sbert_model=none",
    "bootstrap=50",
    "device=cpu", "progress=false",
    "m1_train={lr: 1.0e-2, epochs: 100, max_steps: 40, batch_size: 16, max_length: 64}",
    "sft_train={lr: 1.0e-3, batch_size: 16, max_length: 64}",
    "dpo_train={lr: 1.0e-3, batch_size: 8, max_length: 64}",
]
KILL_AT = "nodes/m1-d/model"


def micro_config(out_dir) -> StudyConfig:
    if "easysum" not in task_names():
        register_task("easysum", EasySumTask)
    return StudyConfig.preset("tiny").with_overrides([*MICRO, f"out_dir={out_dir}"])


SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_study_resume import micro_config, KILL_AT
    from reversalkit.study import Study

    def on_event(kind, name):
        if kind == "artifact" and name == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)

    Study(micro_config({out!r}), on_event=on_event, print_summary=False).run()
""")


def _final_weights(run_dir, node):
    files = sorted((run_dir / "nodes" / node / "model").glob("*.safetensors"))
    return b"".join(p.read_bytes() for p in files)


def _greedy_pass1(run_dir, node, split="id"):
    with gzip.open(run_dir / "nodes" / node / "eval" / f"{split}.greedy.jsonl.gz", "rt") as f:
        flags = [bool(json.loads(line)["correct"]) for line in f]
    return sum(flags) / len(flags)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run A uninterrupted; run B killed after the first DPO round's checkpoint lands, then resumed.
    Shared by the tests below: the two runs are the expensive part."""
    tmp = tmp_path_factory.mktemp("resume")
    a_dir, b_dir = tmp / "a", tmp / "b"
    events = []
    results_a = Study(micro_config(a_dir), on_event=lambda k, n: events.append((k, n)),
                      print_summary=False).run()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    script = SCRIPT.format(tests=os.path.dirname(__file__), out=str(b_dir))
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                            timeout=240)
    manifest_at_kill = json.loads((b_dir / "manifest.json").read_text())
    kill_artifact_left = (b_dir / KILL_AT).exists()
    resumed = []
    results_b = Study(micro_config(b_dir), on_event=lambda k, n: resumed.append((k, n)),
                      print_summary=False).run()
    yield SimpleNamespace(tmp=tmp, a_dir=a_dir, b_dir=b_dir, events=events, results_a=results_a,
                          killed=killed, manifest_at_kill=manifest_at_kill,
                          kill_artifact_left=kill_artifact_left, resumed=resumed, results_b=results_b)
    REGISTRY.unregister("easysum")


@pytest.mark.timeout(300)
def test_killed_study_resumes_to_identical_results(runs):
    assert runs.killed.returncode == -signal.SIGKILL, runs.killed.stderr[-3000:]
    steps = runs.manifest_at_kill["steps"]
    assert "m1-s/eval" in steps and "m1-d/ref" in steps and "m1-d/train" not in steps
    assert runs.kill_artifact_left  # the unfinished step's artifact was on disk
    started = [n for k, n in runs.resumed if k == "step_start"]
    assert started[0] == "m1-d/train"  # nothing before the killed step is redone
    assert "m1/train" not in started and "m1-s/train" not in started
    assert runs.results_b == runs.results_a
    for node in ("m1-ss", "m1-dd", "m1-sd"):
        assert _final_weights(runs.b_dir, node) == _final_weights(runs.a_dir, node)


def test_complete_run_reruns_nothing_and_refuses_a_changed_config(runs):
    again = []
    Study(micro_config(runs.b_dir), on_event=lambda k, n: again.append(k), print_summary=False).run()
    assert "step_start" not in again
    with pytest.raises(ValueError, match="seed: 0 -> 1"):
        Study(micro_config(runs.b_dir).replace(seed=1), print_summary=False).run()


def test_first_dpo_reference_comes_from_m1_samples(runs):
    ref_step = json.loads((runs.a_dir / "manifest.json").read_text())["steps"]["m1-d/ref"]
    assert ref_step["reference"] == "m1" and 0 < ref_step["from_samples"] <= ref_step["pairs"]


def test_run_directory_holds_every_artifact(runs):
    for rel in ("config.yaml", "study.log", "results.json", "report/report.md", "report/index.html",
                "report/pass1.png", "nodes/m1/eval/id.samples.jsonl.gz", "nodes/m1-d/ref_logps.safetensors"):
        assert (runs.a_dir / rel).exists(), rel


def test_cli_sample_and_eval_on_the_runs_m1(runs):
    m1 = str(runs.a_dir / "nodes" / "m1" / "model")
    out = runs.tmp / "samples.jsonl"
    assert cli.main(["-q", "sample", "--model", m1, "--task", "easysum", "--split", "test", "--n", "2",
                     "--max-new-tokens", "24", "--device", "cpu", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 20 and {r["i"] for r in rows} == {0, 1} and all("correct" in r for r in rows)
    metrics_file = runs.tmp / "m1.json"
    assert cli.main(["-q", "eval", "--model", m1, "--preset", "tiny", *sum((["--set", o] for o in MICRO), []),
                     "--out", str(metrics_file)]) == 0
    evaluated = json.loads(metrics_file.read_text())
    assert evaluated["id"]["pass1"] == runs.results_a["methods"]["sft"][0]["eval"]["id"]["pass1"]


def test_shared_lineage_is_trained_once(runs):
    steps = [n for k, n in runs.events if k == "step_done"]
    assert steps.count("m1-s/train") == 1 and "m1-sd/train" in steps  # first round of sft and sft_dpo
    sft, sft_dpo = runs.results_a["methods"]["sft"], runs.results_a["methods"]["sft_dpo"]
    assert [e["node"] for e in sft_dpo] == ["m1", "m1-s", "m1-sd"] and sft_dpo[1] == sft[1]
    for entries in runs.results_a["methods"].values():
        assert [e["iteration"] for e in entries] == [1, 2, 3]


def test_reported_pass1_is_the_greedy_records_accuracy(runs):
    for entries in runs.results_a["methods"].values():
        for e in entries:
            assert e["eval"]["id"]["pass1"]["mean"] == pytest.approx(_greedy_pass1(runs.a_dir, e["node"]),
                                                                     abs=1e-12), e["node"]


@pytest.mark.parametrize("device, released", [("cuda", 1), ("cuda:1", 1), ("cpu", 0)])
def test_training_releases_the_engine_cache_on_a_gpu(device, released):
    """Before each training step the workspace frees the engine's KV cache on CUDA (it holds most
    of the free memory), and leaves the CPU engine alone."""
    from reversalkit.study.workspace import Workspace

    calls = []
    engine = SimpleNamespace(release_memory=lambda: calls.append(1))
    ws = SimpleNamespace(model_node="m1", device=device, engine=engine)
    Workspace.mark_training(ws)
    assert ws.model_node is None and len(calls) == released
