"""The README's own-task example works as written: its module imports, its gold solutions are
judged correct, and `study --dry-run` resolves it by 'module:Class'."""

import re
import sys
from pathlib import Path

import pytest

from reversalkit import cli
from reversalkit.tasks import get_task

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def mytask(tmp_path, monkeypatch):
    text = README.read_text()
    section = text[text.index("## Your own task and your own M1"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "mytask.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("mytask", None)


def test_readme_task_grades_its_own_gold_solutions(mytask):
    task = get_task("mytask:DoubleTask", size=50)
    train, test = task.load("train"), task.load("test")
    assert len(train) == 50 and [p.id for p in train] != [p.id for p in test]
    assert all(task.is_correct(p, p.solution) for p in train)
    assert not task.is_correct(train[0], "#### 1000")
    assert task.equations(train[0].solution) and task.load("train") == train


def test_readme_dry_run_command(mytask, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["study", "--preset", "tiny", "--set", "task=mytask:DoubleTask", "--set",
            "task_options={size: 300}", "--set", "ood_tasks=[]", "--out", str(out), "--dry-run"]
    assert cli.main(argv) == 0
    assert "dry run: task 'mytask:DoubleTask'" in capsys.readouterr().err and not out.exists()


def test_sample_command_takes_a_module_class_task_and_a_saved_model(mytask, tmp_path, capsys):
    """`sample` on a user's own checkpoint folder (a tiny Llama and an offline-trained tokenizer
    written with save_pretrained) and a task named by 'module:Class'."""
    import json

    from reversalkit import models

    task = get_task("mytask:DoubleTask", size=20)
    texts = [task.format_prompt(p) + " " + p.solution for p in task.load("train")]
    tok = models.build_word_tokenizer(texts, max_number=99)
    model = models.tiny_llama(len(tok), hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
    folder = tmp_path / "my-m1"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    out = tmp_path / "s.jsonl"
    assert cli.main(["-q", "sample", "--model", str(folder), "--task", "mytask:DoubleTask", "--task-option",
                     "size=20", "--limit", "3", "--n", "2", "--temperature", "0.75", "--max-new-tokens", "8",
                     "--device", "cpu", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and {r["id"] for r in rows} == {p.id for p in task.load("test")[:3]}
    assert "6 completions for 3 problems" in capsys.readouterr().err
