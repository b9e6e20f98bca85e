"""CommonsenseQA: five-way multiple choice; the answer is a letter A-E.

Hub id `tau/commonsense_qa` (columns `id`, `question`, `choices` = {label, text}, `answerKey`), or
local files in that layout. The hub's test split has no labels, so our `test` reads its
`validation` split, as is usual. Prompts list the choices as `(A) ...`; a completion's letter is
taken from forms like `(C)`, `the answer is C`, `C.`, and only a valid choice letter counts.
"""

from __future__ import annotations

from typing import Any

from reversalkit.tasks import extract
from reversalkit.tasks.base import Problem
from reversalkit.tasks.dataset_task import DatasetTask


class CSQATask(DatasetTask):
    name = "csqa"
    default_hub_id = "tau/commonsense_qa"
    columns = ("question", "choices", "answerKey")
    hub_splits = {"test": "validation"}

    def to_problem(self, row: dict[str, Any], split: str, index: int) -> Problem:
        labels, texts = list(row["choices"]["label"]), list(row["choices"]["text"])
        if not labels or len(labels) != len(texts):
            raise ValueError(f"csqa: row {index} of split {split!r} has malformed choices {row['choices']!r}")
        answer = str(row["answerKey"]).strip()
        if answer not in labels:
            raise ValueError(f"csqa: row {index} of split {split!r} has answerKey {answer!r} not among "
                             f"its labels {labels} (the hub's unlabelled test split cannot be scored)")
        text = dict(zip(labels, texts))[answer]
        return Problem(id=f"csqa/{split}/{row.get('id', index)}", prompt=row["question"].strip(),
                       answer=answer, solution=f"The answer is ({answer}) {text}.",
                       meta={"labels": labels, "choices": texts, "concept": row.get("question_concept")})

    def render_question(self, problem: Problem) -> str:
        pairs = zip(problem.meta["labels"], problem.meta["choices"])
        options = " ".join(f"({lab}) {txt}" for lab, txt in pairs)
        return f"Question: {problem.prompt}\nAnswer Choices: {options}\nAnswer:"

    def render_exemplar(self, problem: Problem) -> str:
        return f"{self.render_question(problem)} {problem.solution}"

    def extract_answer(self, text: str) -> str | None:
        return extract.extract_choice(text, labels="ABCDE")

    def is_correct(self, problem: Problem, text: str) -> bool:
        letter = extract.extract_choice(text, labels="".join(problem.meta["labels"]))
        return letter == problem.answer

    def equations(self, text: str) -> list[str]:
        return []
