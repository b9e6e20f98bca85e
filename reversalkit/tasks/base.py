"""Problems and the Task protocol every task follows, plus a base class with k-shot prompting.

A task is any object with `load(split)`, `format_prompt(problem)`, `extract_answer(text)`,
`is_correct(problem, text)` and `equations(text)`; it does not have to inherit from anything
here. `PromptedTask` is a convenience base: subclasses say how one problem is shown as a
question and as a worked exemplar, and it builds zero-shot or k-shot prompts whose exemplars come
from the train split, drawn once by a fixed seed (the same exemplars for every prompt).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

TASK_METHODS = ("load", "format_prompt", "extract_answer", "is_correct", "equations")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem: `prompt` is the raw question, `answer` the gold final answer as a string.

    `solution` is one canonical gold worked solution (None when the dataset has none); `meta`
    holds task-specific data (MATH `level`/`type`, CSQA `choices`, MBPP `test_list`, synthetic
    `solutions`). `meta` is excluded from hashing so problems can live in sets keyed by content.
    """

    id: str
    prompt: str
    answer: str
    solution: str | None = None
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False, compare=False)


@runtime_checkable
class Task(Protocol):
    """What the study needs from a task. Any object with these methods qualifies."""

    name: str

    def load(self, split: str) -> list[Problem]: ...

    def format_prompt(self, problem: Problem) -> str: ...

    def extract_answer(self, text: str) -> str | None: ...

    def is_correct(self, problem: Problem, text: str) -> bool: ...

    def equations(self, text: str) -> list[str]: ...


def missing_methods(obj: Any) -> list[str]:
    """Names of the Task protocol methods that `obj` lacks (empty when it follows the protocol)."""
    return [m for m in TASK_METHODS if not callable(getattr(obj, m, None))]


class PromptedTask:
    """Base class giving `format_prompt` with optional k-shot exemplars from the train split.

    Subclasses set `name`, implement `load`, `extract_answer`, `is_correct`, `equations`,
    `render_question(problem)` (the prompt without an answer) and `render_exemplar(problem)`
    (question followed by its gold worked answer), and pass `shots` / `shot_seed`.
    """

    name = "task"
    exemplar_separator = "\n\n"

    def __init__(self, shots: int = 0, shot_seed: int = 0, shot_split: str = "train"):
        if shots < 0:
            raise ValueError(f"shots must be >= 0 (0 = zero-shot), got {shots}")
        self.shots = shots
        self.shot_seed = shot_seed
        self.shot_split = shot_split
        self._exemplars: list[Problem] | None = None

    def render_question(self, problem: Problem) -> str:
        raise NotImplementedError

    def render_exemplar(self, problem: Problem) -> str:
        raise NotImplementedError

    def exemplars(self) -> list[Problem]:
        """The k exemplars (k = shots + 1 drawn so one can be dropped when it is the query)."""
        if self._exemplars is None:
            if self.shots == 0:
                self._exemplars = []
            else:
                pool = [p for p in self.load(self.shot_split) if p.solution]
                if len(pool) < self.shots + 1:
                    raise ValueError(
                        f"{self.name}: {self.shots}-shot prompting needs at least {self.shots + 1} "
                        f"problems with solutions in split {self.shot_split!r}, found {len(pool)}"
                    )
                self._exemplars = random.Random(self.shot_seed).sample(pool, self.shots + 1)
        return self._exemplars

    def format_prompt(self, problem: Problem) -> str:
        shots = [p for p in self.exemplars() if p.id != problem.id][: self.shots]
        parts = [self.render_exemplar(p) for p in shots] + [self.render_question(problem)]
        return self.exemplar_separator.join(parts)

    def load(self, split: str) -> list[Problem]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, shots={self.shots})"
