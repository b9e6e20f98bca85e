"""GSM8K / MATH / CSQA / MBPP loaders on small fixture files in each dataset's own layout, their
prompts and reward checks, and the offline error that says how to pass local files."""

import json
from pathlib import Path

import pytest

from reversalkit.tasks import get_task
from reversalkit.tasks.data import DatasetUnavailableError

FIXTURES = Path(__file__).parent / "fixtures"


def files(name, tmp_path=None):
    return {"train": str(FIXTURES / name / "train.jsonl"), "test": str(FIXTURES / name / "test.jsonl")}


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "hf-cache")


def test_gsm8k_local_files(cache):
    task = get_task("gsm8k", data_files=files("gsm8k"), cache_dir=cache)
    test = task.load("test")
    assert [p.answer for p in test] == ["55", "-6", "2000"]
    p = test[0]
    assert task.format_prompt(p) == f"Question: {p.prompt}\nAnswer:"
    assert task.is_correct(p, "7*9=63, 63-8=55\n#### 55")
    assert task.is_correct(p, "The answer is 55 trees.")
    assert not task.is_correct(p, "#### 56")
    assert task.is_correct(test[1], "It drops to -6 degrees.")
    assert task.is_correct(test[2], "#### 2,000")
    assert task.equations(p.solution) == ["7*9=63", "63-8=55"]


def test_k_shot_prompts_are_fixed_and_exclude_the_query(cache):
    task = get_task("gsm8k", data_files=files("gsm8k"), cache_dir=cache, shots=2, shot_seed=3)
    train = task.load("train")
    prompt = task.format_prompt(task.load("test")[0])
    blocks = prompt.split("\n\n")
    assert len(blocks) >= 3 and blocks[-1].endswith("Answer:")
    assert prompt.count("Question:") == 3 and prompt.count("#### ") == 2
    assert task.format_prompt(task.load("test")[0]) == prompt
    again = get_task("gsm8k", data_files=files("gsm8k"), cache_dir=cache, shots=2, shot_seed=3)
    assert again.format_prompt(again.load("test")[0]) == prompt
    for p in train:  # a train problem never sees itself as an exemplar
        own = task.format_prompt(p)
        assert own.count(p.prompt) == 1 and own.count("Question:") == 3
    with pytest.raises(ValueError, match="shots"):
        get_task("gsm8k", data_files=files("gsm8k"), shots=-1)


def test_math_jsonl_and_parquet(cache, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (FIXTURES / "math" / "test.jsonl").read_text().splitlines()]
    parquet = tmp_path / "math_test.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    for data_files in ({"test": str(FIXTURES / "math" / "test.jsonl")}, {"test": str(parquet)}):
        task = get_task("math", data_files=data_files, cache_dir=cache)
        test = task.load("test")
        assert [p.answer for p in test] == ["\\frac{1}{2}", "180^\\circ", "\\left\\{ -1,1\\right\\}", "2"]
        assert [p.meta.get("level") for p in test] == [1, 2, 4, None]
        assert "level" not in test[3].meta  # "Level ?" is no level (kept out of disparity)
        assert test[1].meta["type"] == "Geometry"
    assert task.is_correct(test[0], "so the result is $\\boxed{0.5}$")
    assert task.is_correct(test[0], "$\\boxed{\\dfrac{2}{4}}$")
    assert task.is_correct(test[1], "\\boxed{180}")
    assert task.is_correct(test[2], "\\boxed{\\{1,-1\\}}")
    assert task.is_correct(test[3], "Final Answer: The final answer is $2$. I hope it is correct.")
    assert not task.is_correct(test[3], "\\boxed{3}")
    assert not task.is_correct(test[0], "no boxed answer 0.5")
    assert task.format_prompt(test[0]).startswith("Problem: Compute")


def test_csqa_prompt_and_letters(cache):
    task = get_task("csqa", data_files=files("csqa"), cache_dir=cache)
    p = task.load("test")[1]
    assert p.answer == "B" and p.meta["choices"][1] == "store"
    assert task.format_prompt(p) == ("Question: Where do you buy groceries?\nAnswer Choices: (A) library "
                                     "(B) store (C) ocean (D) cave (E) roof\nAnswer:")
    assert task.is_correct(p, "People buy food at a store, so the answer is (B).")
    assert task.is_correct(p, "B.")
    assert not task.is_correct(p, "The answer is store")  # only a choice letter counts
    assert not task.is_correct(p, "The answer is (C)")
    assert task.extract_answer("answer is F") is None


def test_mbpp_runs_tests_in_the_sandbox(cache):
    task = get_task("mbpp", data_files=files("mbpp"), cache_dir=cache, sandbox={"timeout_s": 2.0})
    test = task.load("test")
    prompt = task.format_prompt(test[0])
    assert prompt.startswith("You are an expert Python programmer, and here is your task: Write a function")
    assert "assert sum_sq([1, 2, 3]) == 14\n" in prompt and prompt.endswith("[BEGIN]\n")
    good = "```python\ndef sum_sq(xs):\n    return sum(x ** 2 for x in xs)\n```"
    wrong = "def sum_sq(xs):\n    return sum(xs)\n[DONE]"
    exit_hack = "import sys\nsys.exit(0)\ndef sum_sq(xs):\n    return 0"
    silent_exit = "import os\nos._exit(0)"
    looping = "def sum_sq(xs):\n    while True:\n        pass"
    verdicts = task.is_correct_batch([test[0]] * 5, [good, wrong, exit_hack, silent_exit, looping],
                                     progress=False)
    assert verdicts == [True, False, False, False, False]
    assert task.is_correct(test[1], test[1].solution)  # needs the setup code (import math)
    assert not task.is_correct(test[1], "")


def test_offline_without_cache_says_how_to_pass_local_files(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    task = get_task("gsm8k", hub_id="reversalkit-test/not-a-real-dataset", cache_dir=cache)
    with pytest.raises(DatasetUnavailableError) as info:
        task.load("train")
    message = str(info.value)
    assert "data_files" in message and "question, answer" in message and "offline" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_local_file_errors(cache, tmp_path):
    with pytest.raises(ValueError, match="no entry for split 'test'"):
        get_task("gsm8k", data_files={"train": files("gsm8k")["train"]}, cache_dir=cache).load("test")
    with pytest.raises(FileNotFoundError):
        get_task("gsm8k", data_files={"test": str(tmp_path / "missing.jsonl")}, cache_dir=cache).load("test")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"q": "x", "a": "y"}) + "\n")
    with pytest.raises(ValueError, match="lacks column"):
        get_task("gsm8k", data_files={"test": str(bad)}, cache_dir=cache).load("test")
    with pytest.raises(ValueError, match="unknown config key"):
        get_task("gsm8k", datafiles="x")


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ('{"question": "q", "answer": "#### 3"}\n{bad json\n', "line 2 is not JSON"),
    ('["q", "#### 3"]\n', "line 1 holds a list, not an object"),
])
def test_bad_local_files_name_the_file_and_line(tmp_path, text, message):
    from reversalkit.tasks import get_task

    path = tmp_path / "rows.jsonl"
    path.write_text(text)
    task = get_task("gsm8k", data_files={"train": str(path), "test": str(path)})
    with pytest.raises(ValueError, match=f"{path}.*{message}|{message}") as info:
        task.load("train")
    assert str(path) in str(info.value)
