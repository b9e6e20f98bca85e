"""Task registry: `get_task(name_or_task, **options)` and `register_task(name, factory)`.

Built-in tasks are registered by import path and imported on first use, so `import
reversalkit.tasks` stays light. A user's task can be registered under a name (then configs and
the CLI refer to it by name) or handed straight to `get_task` as an object or a class.

    register_task("mytask", MyTask)              # or @register_task("mytask") on the class
    task = get_task("mytask", shots=2)
    task = get_task(MyTask(...))                 # an object is checked and returned as is
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from reversalkit.tasks.base import Task, missing_methods

TaskFactory = Callable[..., Any]


class TaskRegistry:
    """Name -> factory (a class, a callable, or a "module:attribute" string imported lazily)."""

    def __init__(self, entries: dict[str, TaskFactory | str] | None = None):
        self._entries: dict[str, TaskFactory | str] = dict(entries or {})

    def names(self) -> list[str]:
        return sorted(self._entries)

    def register(self, name: str, factory: TaskFactory | str, *, overwrite: bool = False) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a task name must be a non-empty string, got {name!r}")
        if name in self._entries and not overwrite:
            raise ValueError(f"task {name!r} is already registered; pass overwrite=True to replace it")
        self._entries[name] = factory

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def factory(self, name: str) -> TaskFactory:
        if name not in self._entries and ":" in name:
            return _import_factory(name)
        if name not in self._entries:
            raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(self.names())}. "
                             "Register your own with reversalkit.tasks.register_task(name, factory) "
                             "or pass a task object to get_task.")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry

    def create(self, name_or_task: Any, **options: Any) -> Task:
        if isinstance(name_or_task, str):
            task = self.factory(name_or_task)(**options)
            where = f"task {name_or_task!r}"
        elif isinstance(name_or_task, type):
            task = name_or_task(**options)
            where = f"task class {name_or_task.__name__}"
        else:
            if options:
                raise ValueError(f"options {sorted(options)} given together with a task object "
                                 f"{name_or_task!r}; configure the object itself instead")
            task, where = name_or_task, f"task object {name_or_task!r}"
        missing = missing_methods(task)
        if missing:
            raise TypeError(f"{where} does not follow the Task protocol: missing {', '.join(missing)} "
                            "(see reversalkit.tasks.Task)")
        return task


def _import_factory(spec: str) -> TaskFactory:
    """A task class given as 'package.module:Class' (a user's own task, from YAML or the CLI)."""
    module, _, attr = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        raise ValueError(f"task {spec!r}: cannot import module {module!r} ({exc}); is it installed or on "
                         "PYTHONPATH?") from None
    except AttributeError:
        raise ValueError(f"task {spec!r}: module {module!r} has no attribute {attr!r}") from None
    if not callable(found):
        raise ValueError(f"task {spec!r}: {attr!r} is not a class or factory")
    return found


def task_spec(task: Any) -> str:
    """How a task object is named in a run's config: its registered name where it has one that
    resolves to its class, else 'module:Class'."""
    name = getattr(task, "name", None)
    cls = type(task)
    if isinstance(name, str) and name in REGISTRY.names():
        try:
            if REGISTRY.factory(name) is cls:
                return name
        except ValueError:
            pass
    return f"{cls.__module__}:{cls.__qualname__}"


BUILTIN_TASKS: dict[str, str] = {
    "synthetic": "reversalkit.tasks.synthetic:SyntheticTask",
    "gsm8k": "reversalkit.tasks.gsm8k:GSM8KTask",
    "math": "reversalkit.tasks.math_task:MathTask",
    "csqa": "reversalkit.tasks.csqa:CSQATask",
    "mbpp": "reversalkit.tasks.mbpp:MBPPTask",
    "humaneval": "reversalkit.tasks.humaneval:HumanEvalTask",
}

# The process-wide registry: the one place names resolve, so a name registered by user code is
# visible to configs and the CLI. Tests that register names remove them again.
REGISTRY = TaskRegistry(BUILTIN_TASKS)


def register_task(name: str, factory: TaskFactory | None = None, *, overwrite: bool = False):
    """Register `factory` under `name`; without a factory, returns a class decorator."""
    if factory is None:
        def decorator(cls: TaskFactory) -> TaskFactory:
            REGISTRY.register(name, cls, overwrite=overwrite)
            return cls
        return decorator
    REGISTRY.register(name, factory, overwrite=overwrite)
    return factory


def portable_task(name: str) -> bool:
    """Whether a new Python process resolves the task `name` as this one does: a built-in name not
    replaced by `register_task(..., overwrite=True)`, or a 'module:Class' spec that is not a
    registered name. A name registered by user code exists only in the process that registered it."""
    entry = REGISTRY._entries.get(name)
    if entry is None:
        return ":" in name
    if name not in BUILTIN_TASKS:
        return False
    spec = entry if isinstance(entry, str) else f"{entry.__module__}:{entry.__qualname__}"
    return spec == BUILTIN_TASKS[name]


def get_task(name_or_task: Any, **options: Any) -> Task:
    """A task by registered name (options go to its constructor), class, or ready object."""
    return REGISTRY.create(name_or_task, **options)


def task_names() -> list[str]:
    return REGISTRY.names()
