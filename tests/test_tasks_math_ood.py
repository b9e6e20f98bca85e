"""MATH as the OOD set of a GSM8K-trained model: GSM8K's prompt format, "#### N" answers."""

import pytest

from reversalkit.study.config import StudyConfig
from reversalkit.tasks import extract, get_task
from reversalkit.tasks.base import Problem
from reversalkit.tasks.gsm8k import GSM8KTask
from reversalkit.tasks.math_task import MathTask


def _problem(answer="12"):
    return Problem(id="math/test/0", prompt="What is $3 \\cdot 4$?", answer=answer,
                   solution=f"$3 \\cdot 4 = {answer}$, so the answer is $\\boxed{{{answer}}}$.",
                   meta={"level": 1, "type": "Prealgebra"})


@pytest.mark.parametrize("style", ["math", "gsm8k"])
def test_gsm8k_format_answer_is_scored_on_a_math_problem(style):
    task = MathTask(prompt_style=style)
    p = _problem("12")
    assert task.is_correct(p, "Three times four is <<3*4=12>>12.\n#### 12")
    assert task.is_correct(p, "3 * 4 = 12\n# # # # 12.")  # as a word-level detokenizer writes it
    assert not task.is_correct(p, "Three times four is <<3*4=13>>13.\n#### 13")
    assert not task.is_correct(p, "Three times four is 12.")  # no final-answer line: not read
    assert task.extract_answer("#### 12\n\nQuestion: next one #### 7") == "7"  # the last "####"


def test_hashes_answer_compared_under_math_equivalence():
    task = MathTask(prompt_style="gsm8k")
    assert task.is_correct(_problem("1200"), "#### 1,200")
    assert task.is_correct(_problem("\\frac{1}{2}"), "half of one is\n#### 0.5")
    assert task.is_correct(_problem("5"), "#### $5.")
    assert not task.is_correct(_problem("\\frac{1}{2}"), "#### 2")
    # \boxed{} and "The final answer is" still come first.
    assert task.extract_answer("#### 3\nso $\\boxed{4}$") == "4"
    assert task.extract_answer("#### 3\nThe final answer is $5$. I hope it is correct.") == "5"


def test_hashes_answer_extraction():
    assert extract.hashes_answer("a\n#### $1,234.\nQuestion: b") == "1,234"
    assert extract.hashes_answer("# # # # \\frac{1}{2}") == "\\frac{1}{2}"
    assert extract.hashes_answer("#### \n") is None
    assert extract.hashes_answer("no final line") is None


def test_gsm8k_prompt_style_asks_as_gsm8k_does():
    p = _problem()
    assert MathTask(prompt_style="gsm8k").format_prompt(p) == GSM8KTask().format_prompt(p)
    assert MathTask().format_prompt(p) == f"Problem: {p.prompt}\nSolution:"
    exemplar = MathTask(prompt_style="gsm8k").render_exemplar(p)
    assert exemplar.startswith(GSM8KTask().render_question(p)) and exemplar.endswith("\n#### 12")
    text = "Three times four is <<3*4=12>>12. Add 1: <<12+1=13>>13.\n#### 13"
    assert MathTask(prompt_style="gsm8k").equations(text) == ["3*4=12", "12+1=13"]
    assert MathTask().equations("so $3 \\cdot 4 = 12$") == ["3\\cdot4=12"]


def test_prompt_style_reaches_the_task_from_the_gsm8k_preset():
    cfg = StudyConfig.preset("gsm8k")
    task = get_task("math", **cfg.ood_task_options["math"])  # as workspace.load_eval_sets builds it
    assert task.prompt_style == "gsm8k"
    with pytest.raises(ValueError, match="prompt_style must be one of .*'chat'"):
        get_task("math", prompt_style="chat")


def test_an_unknown_level_is_not_stored():
    task = MathTask()
    row = {"problem": "p", "solution": "$\\boxed{2}$", "type": "Algebra"}
    assert task.to_problem({**row, "level": "Level 3"}, "test", 0).meta == {"level": 3, "type": "Algebra"}
    for level in ("Level ?", None, ""):
        assert "level" not in task.to_problem({**row, "level": level}, "test", 1).meta, level
