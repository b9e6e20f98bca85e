"""MBPP: short Python programming problems checked by their assert tests.

Hub id `google-research-datasets/mbpp` (config `full`: `task_id`, `text`, `code`, `test_list`,
`test_setup_code`, `challenge_test_list`; config `sanitized` uses `prompt` and `test_imports`),
or local files in either layout. The prompt is the common MBPP one: the task text, then "Your
code should pass these tests:" with the asserts, then `[BEGIN]`; a gold exemplar is its code
followed by `[DONE]`. A completion's code (a fenced block, the text before `[DONE]`, or raw code)
runs after the problem's setup code in `reversalkit.tasks.sandbox`, which only answers calls; the
asserts themselves run here, in the grader, on the plain data the program returns (see
`sandbox_calls`). It is correct iff every assert holds and the program then exits cleanly; its
exit code alone, its output, or objects that claim equality decide nothing.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
from typing import Any

from reversalkit.tasks import extract
from reversalkit.tasks.base import Problem
from reversalkit.tasks.dataset_task import DatasetTask
from reversalkit.tasks.grading import grade_programs
from reversalkit.tasks.sandbox import SandboxLimits
from reversalkit.tasks.sandbox_calls import Calls

# Modules a test may name without importing them (the candidate's own `import math` made them
# visible to the asserts); the grader binds its own copies, never the program's.
TRUSTED_MODULES = frozenset({"math", "cmath", "re", "collections", "heapq", "itertools", "functools",
                             "operator", "string", "decimal", "fractions", "datetime", "array",
                             "bisect", "statistics", "copy"})


def top_level_names(source: str, imports: bool = True) -> set[str]:
    """Names that `source` binds at module level (functions, classes, assignments, and imports
    unless `imports` is False)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if imports:
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
        else:
            names.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name)
                         and isinstance(n.ctx, ast.Store))
    return names


@functools.lru_cache(maxsize=4096)
def _compiled(setup: str, tests: tuple[str, ...], reference: str):
    """(setup code, test codes, names the candidate must supply), compiled once per problem."""
    codes = [compile(t, f"<test {i}>", "exec") for i, t in enumerate(tests)]
    loaded = {n.id for t in tests for n in ast.walk(ast.parse(t))
              if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    own = top_level_names(reference, imports=False)  # a solution's `def max(...)` shadows the builtin
    free = loaded - top_level_names(setup)
    remote = {n for n in free if n in own or not (hasattr(builtins, n) or n in TRUSTED_MODULES)}
    modules = {n for n in free - remote if n in TRUSTED_MODULES}
    return compile(setup, "<setup>", "exec"), codes, sorted(remote), sorted(modules)


def assert_check(problem: Problem):
    """The grader-side check of `problem`'s asserts: `check(calls)` is True iff all of them hold."""
    setup_code, tests, remote, modules = _compiled(problem.meta.get("test_setup_code") or "",
                                                   tuple(problem.meta["test_list"]),
                                                   problem.solution or "")

    def check(calls: Calls) -> bool:
        ns: dict[str, Any] = {"__builtins__": builtins, "__name__": "mbpp_tests"}
        exec(setup_code, ns)  # the dataset's own setup (imports), run on this side too
        ns.update({m: importlib.import_module(m) for m in modules})
        ns.update({n: calls.name(n) for n in remote})
        for code in tests:
            try:
                exec(code, ns)
            except Exception:  # noqa: BLE001 - a failed assert or a candidate's exception
                return False
        return True

    return check


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
        codes = [extract.extract_code(t) for t in texts]
        programs = [None if code is None else f"{p.meta.get('test_setup_code') or ''}\n{code}\n"
                    for p, code in zip(problems, codes)]
        checks = [None if code is None else assert_check(p) for p, code in zip(problems, codes)]
        return grade_programs(programs, checks, limits=self.sandbox, workers=self.workers,
                              progress=progress, desc="mbpp tests")

    def equations(self, text: str) -> list[str]:
        return []
