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
