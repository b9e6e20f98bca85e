"""GSM8K: grade-school math word problems with worked solutions ending in `#### <answer>`.

Hub id `openai/gsm8k` (config `main`, columns `question`, `answer`), or local files in that
layout. The gold answer is the number after `####`; a completion's answer is found after its
last `####`, else after "the answer is", else it is the last number (see `extract`).
"""

from __future__ import annotations

from typing import Any

from reversalkit.tasks import extract
from reversalkit.tasks.base import Problem
from reversalkit.tasks.dataset_task import DatasetTask


class GSM8KTask(DatasetTask):
    name = "gsm8k"
    default_hub_id = "openai/gsm8k"
    default_hub_config = "main"
    columns = ("question", "answer")

    def to_problem(self, row: dict[str, Any], split: str, index: int) -> Problem:
        return Problem(id=f"gsm8k/{split}/{index}", prompt=row["question"].strip(),
                       answer=extract.gsm8k_gold(row["answer"]), solution=row["answer"].strip())

    def render_question(self, problem: Problem) -> str:
        return f"Question: {problem.prompt}\nAnswer:"

    def render_exemplar(self, problem: Problem) -> str:
        return f"{self.render_question(problem)} {problem.solution}"

    def extract_answer(self, text: str) -> str | None:
        return extract.extract_number_answer(text)

    def is_correct(self, problem: Problem, text: str) -> bool:
        return extract.numbers_equal(self.extract_answer(text), problem.answer)

    def equations(self, text: str) -> list[str]:
        return extract.equations(text)
