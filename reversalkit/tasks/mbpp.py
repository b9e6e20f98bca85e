"""MBPP: short Python programming problems checked by their assert tests.

Hub id `google-research-datasets/mbpp` (config `full`: `task_id`, `text`, `code`, `test_list`,
`test_setup_code`, `challenge_test_list`; config `sanitized` uses `prompt` and `test_imports`),
or local files in either layout. The prompt is the common MBPP one: the task text, then "Your
code should pass these tests:" with the asserts, then `[BEGIN]`; a gold exemplar is its code
followed by `[DONE]`. A completion's code (a fenced block, the text before `[DONE]`, or raw code)
runs with the problem's tests in `reversalkit.tasks.sandbox`; it is correct iff the program exits
0 and its final line, printed after the last assert, is seen (so `sys.exit(0)` before the tests
does not pass).
"""

from __future__ import annotations

import secrets
from typing import Any

from reversalkit.tasks import extract
from reversalkit.tasks.base import Problem
from reversalkit.tasks.dataset_task import DatasetTask
from reversalkit.tasks.sandbox import SandboxLimits, SandboxResult, run, run_many


def build_program(problem: Problem, code: str, token: str) -> str:
    """The program that is run: setup/imports, the candidate code, the asserts, then `token`."""
    setup = problem.meta.get("test_setup_code") or ""
    tests = "\n".join(problem.meta["test_list"])
    return (f"{setup}\n{code}\n\n{tests}\n"
            f"import sys as _rk_sys\n_rk_sys.__stdout__.write('\\n' + {token!r} + '\\n')\n"
            "_rk_sys.__stdout__.flush()\n")


def passed(result: SandboxResult, token: str) -> bool:
    lines = result.stdout.rstrip("\n").splitlines()
    return result.ok and bool(lines) and lines[-1] == token


class MBPPTask(DatasetTask):
    name = "mbpp"
    default_hub_id = "google-research-datasets/mbpp"
    default_hub_config = "full"
    columns = ("task_id", "code", "test_list")

    def __init__(self, *, sandbox: SandboxLimits | dict | None = None, workers: int | None = None,
                 **options: Any):
        super().__init__(**options)
        if not isinstance(sandbox, SandboxLimits):
            sandbox = SandboxLimits.from_dict(sandbox or {})
        self.sandbox = sandbox
        self.workers = workers

    def to_problem(self, row: dict[str, Any], split: str, index: int) -> Problem:
        text = row.get("text") or row.get("prompt")
        if not text:
            raise ValueError(f"mbpp: row {index} of split {split!r} has neither 'text' nor 'prompt'")
        setup = row.get("test_setup_code") or "\n".join(row.get("test_imports") or [])
        meta = {"task_id": row["task_id"], "test_list": list(row["test_list"]), "test_setup_code": setup,
                "challenge_test_list": list(row.get("challenge_test_list") or [])}
        return Problem(id=f"mbpp/{split}/{row['task_id']}", prompt=text.strip(), answer=row["code"],
                       solution=row["code"], meta=meta)

    def render_question(self, problem: Problem) -> str:
        tests = "\n".join(problem.meta["test_list"])
        return (f"You are an expert Python programmer, and here is your task: {problem.prompt} "
                f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n")

    def render_exemplar(self, problem: Problem) -> str:
        return f"{self.render_question(problem)}{problem.solution}\n[DONE]"

    def extract_answer(self, text: str) -> str | None:
        return extract.extract_code(text)

    def is_correct(self, problem: Problem, text: str) -> bool:
        return self.is_correct_batch([problem], [text], progress=False)[0]

    def is_correct_batch(self, problems: list[Problem], texts: list[str], *,
                         progress: bool = True) -> list[bool]:
        """Run every completion's program with its problem's tests, concurrently."""
        if len(problems) != len(texts):
            raise ValueError(f"{len(problems)} problems but {len(texts)} completions")
        token = f"__reversalkit_tests_passed_{secrets.token_hex(8)}__"
        codes = [extract.extract_code(t) for t in texts]
        todo = [i for i, c in enumerate(codes) if c is not None]
        programs = [build_program(problems[i], codes[i], token) for i in todo]
        if len(programs) == 1:
            results = [run(programs[0], limits=self.sandbox)]
        else:
            results = run_many(programs, limits=self.sandbox, workers=self.workers, progress=progress,
                               desc="mbpp tests")
        verdicts = [False] * len(texts)
        for i, res in zip(todo, results):
            verdicts[i] = passed(res, token)
        return verdicts

    def equations(self, text: str) -> list[str]:
        return []
