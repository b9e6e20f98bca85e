"""The task registry and protocol: built-in names, clear errors, and a user-defined task (written
here, outside the package) registered under a name or handed over as an object or class."""

import re

import pytest

from reversalkit.tasks import REGISTRY, Problem, PromptedTask, Task, get_task, register_task, task_names


class ParityTask(PromptedTask):
    """A user's own task: is a number even or odd? Follows the protocol without package changes."""

    name = "parity"

    def __init__(self, size: int = 6, shots: int = 0):
        super().__init__(shots=shots, shot_seed=1)
        self.size = size

    def load(self, split):
        offset = 0 if split == "train" else 100
        return [Problem(id=f"parity/{split}/{i}", prompt=f"Is {i + offset} even or odd?",
                        answer="even" if (i + offset) % 2 == 0 else "odd",
                        solution=f"{i + offset} is {'even' if (i + offset) % 2 == 0 else 'odd'}. #### "
                                 f"{'even' if (i + offset) % 2 == 0 else 'odd'}")
                for i in range(self.size)]

    def render_question(self, problem):
        return f"Q: {problem.prompt}\nA:"

    def render_exemplar(self, problem):
        return f"{self.render_question(problem)} {problem.solution}"

    def extract_answer(self, text):
        found = re.findall(r"\b(even|odd)\b", text)
        return found[-1] if found else None

    def is_correct(self, problem, text):
        return self.extract_answer(text) == problem.answer

    def equations(self, text):
        return []


class MinimalTask:
    """Duck-typed: no base class at all."""

    name = "minimal"

    def load(self, split):
        return [Problem("m/0", "1+1?", "2")]

    def format_prompt(self, problem):
        return problem.prompt

    def extract_answer(self, text):
        return text.strip() or None

    def is_correct(self, problem, text):
        return self.extract_answer(text) == problem.answer

    def equations(self, text):
        return []


@pytest.fixture
def registered():
    register_task("parity", ParityTask)
    yield
    REGISTRY.unregister("parity")


def test_builtin_names_and_unknown_name():
    assert {"synthetic", "gsm8k", "math", "csqa", "mbpp"} <= set(task_names())
    with pytest.raises(ValueError) as info:
        get_task("gsm9k")
    for name in ("synthetic", "gsm8k", "math", "csqa", "mbpp"):
        assert name in str(info.value)


def test_builtins_follow_the_protocol():
    for name in ("gsm8k", "math", "csqa", "mbpp"):
        task = get_task(name)  # constructing loads nothing
        assert isinstance(task, Task) and task.name == name
    synthetic = get_task("synthetic", train_size=4, test_size=2, ood_size=2)
    assert isinstance(synthetic, Task) and len(synthetic.load("test")) == 2


def test_user_task_registered_by_name(registered):
    task = get_task("parity", size=4, shots=1)
    assert isinstance(task, ParityTask) and "parity" in task_names()
    problem = task.load("test")[1]
    prompt = task.format_prompt(problem)
    assert prompt.endswith("Q: Is 101 even or odd?\nA:") and prompt.count("Q:") == 2
    assert task.is_correct(problem, "It is odd") and not task.is_correct(problem, "even")
    with pytest.raises(ValueError, match="already registered"):
        register_task("parity", ParityTask)


def test_user_task_as_object_class_or_decorator():
    obj = ParityTask(size=2)
    assert get_task(obj) is obj
    assert isinstance(get_task(ParityTask, size=3), ParityTask)
    assert get_task(MinimalTask()).is_correct(Problem("m", "1+1?", "2"), " 2 ")
    with pytest.raises(ValueError, match="together with a task object"):
        get_task(obj, size=3)

    @register_task("minimal-decorated")
    class Decorated(MinimalTask):
        pass

    try:
        assert isinstance(get_task("minimal-decorated"), Decorated)
    finally:
        REGISTRY.unregister("minimal-decorated")


def test_protocol_violation_is_reported():
    class Broken:
        name = "broken"

        def load(self, split):
            return []

    with pytest.raises(TypeError, match="format_prompt, extract_answer, is_correct, equations"):
        get_task(Broken())


def test_problem_is_frozen_and_hashable():
    p = Problem("a", "prompt", "1", meta={"x": [1]})
    with pytest.raises(AttributeError):
        p.answer = "2"
    assert {p, Problem("a", "prompt", "1", meta={"y": 2})} == {p}
