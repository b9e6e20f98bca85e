"""MATH (Hendrycks et al.): competition problems whose solutions box the final answer.

Hub id `EleutherAI/hendrycks_math` (one config per subject, concatenated; columns `problem`,
`solution`, `level`, `type`), or local files in that layout; an `answer` column (as in MATH-500)
is used when present, and `subject` stands in for `type`. The gold answer is the last
`\\boxed{}`/`\\fbox{}` of the solution. Equivalence: exact after MATH normalization, then
math-verify with a timeout (see `math_normalize`). `meta` keeps `type` and, when the row's level
carries a number, `level` (int 1-5), which the group-disparity metric needs; an unknown level
("Level ?") is left out, so it never counts as a level of its own.

As the OOD set of a model trained on GSM8K (the paper's GSM8K -> MATH), pass
`prompt_style="gsm8k"`: problems are then asked as GSM8K asks them ("Question: ...\\nAnswer:"),
and equations are read as GSM8K writes them, so the model is tested on MATH and not on a prompt
format it never saw. In either style a final answer is read from `\\boxed{}`, then "The final
answer is ...", then a GSM8K-style `#### <answer>` line.
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
PROMPT_STYLES = ("math", "gsm8k")

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

    def __init__(self, *, verify_timeout_s: float = 5.0, prompt_style: str = "math", **options: Any):
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"math: prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}; "
                             "use 'gsm8k' to evaluate a GSM8K-trained model on MATH")
        super().__init__(**options)
        self.prompt_style = prompt_style
        self.verifier = MathVerifier(timeout_s=verify_timeout_s)

    def to_problem(self, row: dict[str, Any], split: str, index: int) -> Problem:
        answer = row.get("answer") or extract.last_boxed(row["solution"])
        if not answer:
            raise ValueError(f"math: row {index} of split {split!r} has no \\boxed{{}} answer in its "
                             f"solution: {row['solution'][-120:]!r}")
        meta: dict[str, Any] = {"type": row.get("type") or row.get("subject")}
        level = parse_level(row.get("level"))
        if level is not None:
            meta["level"] = level
        return Problem(id=f"math/{split}/{index}", prompt=row["problem"].strip(), answer=answer,
                       solution=row["solution"].strip(), meta=meta)

    def render_question(self, problem: Problem) -> str:
        if self.prompt_style == "gsm8k":
            return f"Question: {problem.prompt}\nAnswer:"  # GSM8KTask.render_question, word for word
        return f"Problem: {problem.prompt}\nSolution:"

    def render_exemplar(self, problem: Problem) -> str:
        if self.prompt_style == "gsm8k":
            # Exemplars end as GSM8K solutions do, so a few-shot prompt shows the "####" line too.
            return f"{self.render_question(problem)} {problem.solution}\n#### {problem.answer}"
        return f"{self.render_question(problem)} {problem.solution}"

    def extract_answer(self, text: str) -> str | None:
        boxed = extract.last_boxed(text)
        if boxed is not None:
            return boxed
        finals = _FINAL_ANSWER_RE.findall(text)
        if finals:
            return finals[-1].strip()
        return extract.hashes_answer(text)

    def is_correct(self, problem: Problem, text: str) -> bool:
        return self.verifier.equal(problem.answer, self.extract_answer(text))

    def equations(self, text: str) -> list[str]:
        """Equalities inside math mode (`$a+b=c$`), whitespace removed; in the gsm8k style, GSM8K's
        `<<a=b>>` annotations or inline arithmetic (see `extract.equations`)."""
        if self.prompt_style == "gsm8k":
            return extract.equations(text)
        segments = re.findall(r"\$\$?(.+?)\$\$?", text, flags=re.DOTALL)
        return [re.sub(r"\s+", "", s) for s in segments if "=" in s]
