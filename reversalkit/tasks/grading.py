"""Verdicts of generated programs, one per completion: the shared last step of the code tasks.

A completion without a program (nothing extractable) is wrong without running; the others run in
the sandbox with their check, concurrently when there are several.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reversalkit.tasks.sandbox import SandboxLimits, run, run_many


def grade_programs(programs: Sequence[str | None], checks: Sequence[Any], *, limits: SandboxLimits,
                   workers: int | None, progress: bool, desc: str) -> list[bool]:
    """`passed` of each program under its check (checks[i] belongs to programs[i])."""
    if len(programs) != len(checks):
        raise ValueError(f"{len(programs)} programs but {len(checks)} checks")
    todo = [i for i, code in enumerate(programs) if code is not None]
    codes, todo_checks = [programs[i] for i in todo], [checks[i] for i in todo]
    if len(codes) == 1:
        results = [run(codes[0], limits=limits, check=todo_checks[0])]
    else:
        results = run_many(codes, limits=limits, workers=workers, progress=progress, desc=desc,
                           checks=todo_checks)
    verdicts = [False] * len(programs)
    for i, res in zip(todo, results):
        verdicts[i] = res.passed
    return verdicts
