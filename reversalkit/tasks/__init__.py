"""Tasks: problems, answer checking and the code sandbox.

    from reversalkit.tasks import get_task
    task = get_task("synthetic")                 # or gsm8k | math | csqa | mbpp, with options
    problems = task.load("train")                # list[Problem]
    prompt = task.format_prompt(problems[0])
    task.is_correct(problems[0], completion)     # the study's reward

A task is any object with `load`, `format_prompt`, `extract_answer`, `is_correct` and `equations`
(see `Task`); register your own with `register_task(name, factory)` or pass it to `get_task`.
Modules: base (Problem, Task), registry, extract / math_normalize (answer checking), data and
dataset_task (loading through `datasets`), synthetic*, gsm8k, math_task, csqa, mbpp, and
sandbox (running untrusted code). Task modules are imported on first use.
"""

from reversalkit.tasks.base import Problem, PromptedTask, Task
from reversalkit.tasks.registry import REGISTRY, TaskRegistry, get_task, register_task, task_names

__all__ = ["Problem", "PromptedTask", "REGISTRY", "Task", "TaskRegistry", "get_task", "register_task",
           "task_names"]
