"""HumanEval as the peer suite, on a shipped fixture of 12 of its problems (MIT, see
fixtures/humaneval/LICENSE) chosen for what grading must get right: floats, tuples, None, mixed
argument types, prompt helpers the test calls (32 poly, 38 encode_cyclic), random inputs (38, 53).
Canonical solutions pass, `return None` bodies fail, verdicts equal a plain subprocess's; a test
that calls the entry point by name (HumanEval/33's pattern) is built here."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from reversalkit.tasks import get_task, humaneval
from reversalkit.tasks.base import Problem

FIXTURE = Path(__file__).parent / "fixtures" / "humaneval" / "test.jsonl"


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return get_task("humaneval", data_files={"test": str(FIXTURE)},
                    cache_dir=str(tmp_path_factory.mktemp("hf-cache")), sandbox={"timeout_s": 10.0},
                    workers=2)


def plain_verdict(problem, code):
    """What running the program with its test in a plain subprocess says (the usual harness)."""
    full = f"{code}\n{problem.meta['test']}\ncheck({problem.meta['entry_point']})\n"
    return subprocess.run([sys.executable, "-c", full], capture_output=True, timeout=60).returncode == 0


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
