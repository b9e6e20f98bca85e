"""MATH (Hendrycks et al.): competition problems whose solutions box the final answer.

Hub id `EleutherAI/hendrycks_math` (one config per subject, concatenated; columns `problem`,
`solution`, `level`, `type`), or local files in that layout; an `answer` column (as in MATH-500)
is used when present, and `subject` stands in for `type`. The gold answer is the last
`\\boxed{}`/`\\fbox{}` of the solution. Equivalence: exact after MATH normalization, then
math-verify with a timeout (see `math_normalize`). `meta` keeps `level` (int 1-5, or None) and
`type`, which the group-disparity metric needs.
"""

from __future__ import annotations

import re
from typing import Any

from reversalkit.tasks import extract
from reversalkit.tasks.base import Problem
from reversalkit.tasks.dataset_task import DatasetTask
from reversalkit.tasks.math_normalize import MathVerifier

MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                 "number_theory", "prealgebra", "precalculus")

_FINAL_ANSWER_RE = re.compile(r"final answer is\s*:?\s*\$?(.+?)\$?\s*(?:\.\s*I hope|\.?\s*$)",
                              re.IGNORECASE | re.MULTILINE)


def parse_level(value: Any) -> int | None:
    """'Level 3' or 3 -> 3; 'Level ?' -> None."""
    match = re.search(r"\d+", str(value)) if value is not None else None
    return int(match.group(0)) if match else None


class MathTask(DatasetTask):
    name = "math"
    default_hub_id = "EleutherAI/hendrycks_math"
    default_hub_config = MATH_SUBJECTS
    columns = ("problem", "solution")

    def __init__(self, *, verify_timeout_s: float = 5.0, **options: Any):
        super().__init__(**options)
        self.verifier = MathVerifier(timeout_s=verify_timeout_s)

    def to_problem(self, row: dict[str, Any], split: str, index: int) -> Problem:
        answer = row.get("answer") or extract.last_boxed(row["solution"])
        if not answer:
            raise ValueError(f"math: row {index} of split {split!r} has no \\boxed{{}} answer in its "
                             f"solution: {row['solution'][-120:]!r}")
        meta = {"level": parse_level(row.get("level")), "type": row.get("type") or row.get("subject")}
        return Problem(id=f"math/{split}/{index}", prompt=row["problem"].strip(), answer=answer,
                       solution=row["solution"].strip(), meta=meta)

    def render_question(self, problem: Problem) -> str:
        return f"Problem: {problem.prompt}\nSolution:"

    def render_exemplar(self, problem: Problem) -> str:
        return f"{self.render_question(problem)} {problem.solution}"

    def extract_answer(self, text: str) -> str | None:
        boxed = extract.last_boxed(text)
        if boxed is not None:
            return boxed
        finals = _FINAL_ANSWER_RE.findall(text)
        return finals[-1].strip() if finals else None

    def is_correct(self, problem: Problem, text: str) -> bool:
        return self.verifier.equal(problem.answer, self.extract_answer(text))

    def equations(self, text: str) -> list[str]:
        """Equalities inside math mode (`$a+b=c$`), whitespace removed."""
        segments = re.findall(r"\$\$?(.+?)\$\$?", text, flags=re.DOTALL)
        return [re.sub(r"\s+", "", s) for s in segments if "=" in s]
