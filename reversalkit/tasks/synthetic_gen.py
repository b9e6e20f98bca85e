"""Generator of the synthetic task: stories (a start amount, gains/losses, maybe a final split or
multiple), their problem text, and many valid worked solutions per story.

A story's canonical solution works through the events in order with one equation per step. The
other solutions are different but equally valid: another event order (subtracting first), all
products first, gains and losses summed separately, two steps merged into one equation, a
product fused with its addition, commuted operands (3*7 vs 7*3, 5+12 vs 12+5), other phrasings.
Every number anywhere (inputs, intermediate results, answers) is an integer in 0..999.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from reversalkit.tasks import extract
from reversalkit.tasks import synthetic_world as W

MAX_NUMBER = 999


@dataclass(frozen=True)
class Ranges:
    """Inclusive ranges of the sampled numbers."""

    start: tuple[int, int]
    amount: tuple[int, int]
    groups: tuple[int, int]
    per_group: tuple[int, int]


ID_RANGES = Ranges(start=(5, 60), amount=(2, 30), groups=(2, 6), per_group=(2, 12))
OOD_RANGES = Ranges(start=(20, 200), amount=(5, 90), groups=(2, 9), per_group=(3, 20))


@dataclass(frozen=True)
class Event:
    kind: str  # start | start_groups | gain | loss | gain_groups | loss_groups
    a: int
    b: int = 1  # items per container for *_groups events
    phrasing: int = 0

    @property
    def grouped(self) -> bool:
        return self.kind.endswith("_groups")

    @property
    def value(self) -> int:
        return self.a * self.b

    @property
    def sign(self) -> int:
        return -1 if self.kind.startswith("loss") else 1


@dataclass(frozen=True)
class Story:
    name: str
    friend: str
    item: str
    container: str
    events: tuple[Event, ...]  # events[0] is the start
    final: tuple[str, int, int] | None  # (share | pack | times, k, phrasing)
    question: int

    def total(self) -> int:
        return sum(e.sign * e.value for e in self.events)

    def answer(self) -> int:
        total = self.total()
        if self.final is None:
            return total
        kind, k, _ = self.final
        return total * k if kind == "times" else total // k

    def fill(self) -> dict[str, str]:
        return {"N": self.name, "F": self.friend, "I": self.item, "C": self.container}


def _phrasing(rng: random.Random, n: int, ood: bool) -> int:
    """ID draws from all phrasings but the last; OOD uses the held-out last one half the time."""
    if ood and rng.random() < 0.5:
        return n - 1
    return rng.randrange(n - 1)


def _event_numbers(rng: random.Random, kind: str, running: int, r: Ranges) -> tuple[int, int] | None:
    if kind == "gain":
        return rng.randint(*r.amount), 1
    if kind == "loss":
        hi = min(r.amount[1], running - 1)
        return (rng.randint(r.amount[0], hi), 1) if hi >= r.amount[0] else None
    a = rng.randint(*r.groups)
    if kind == "gain_groups":
        return a, rng.randint(*r.per_group)
    hi = min(r.per_group[1], (running - 1) // a)  # loss_groups: cannot give away more than held
    return (a, rng.randint(r.per_group[0], hi)) if hi >= r.per_group[0] else None


def _final(rng: random.Random, running: int, ood: bool) -> tuple[str, int, int] | None:
    kind = rng.choice(("share", "pack", "times"))
    if kind == "times":
        ks = [k for k in range(2, 10) if running * k <= MAX_NUMBER]
    else:
        ks = [k for k in range(2, 10) if running % k == 0 and running // k >= 2]
    return (kind, rng.choice(ks), _phrasing(rng, 2, ood)) if ks else None


def sample_story(rng: random.Random, steps: int, r: Ranges, ood: bool) -> Story | None:
    """A story whose canonical solution has exactly `steps` equations, or None (caller retries)."""
    name, friend = rng.sample(W.NAMES, 2)
    start_groups = steps >= 2 and rng.random() < 0.3
    budget = steps - int(start_groups)
    want_final = budget >= 2 and rng.random() < 0.35
    budget -= int(want_final)
    kinds = []
    while budget > 0:
        kind = rng.choice(("gain", "loss", "gain_groups", "loss_groups") if budget >= 2 else ("gain", "loss"))
        kinds.append(kind)
        budget -= 2 if kind.endswith("_groups") else 1
    if start_groups:
        first = Event("start_groups", rng.randint(*r.groups), rng.randint(*r.per_group),
                      _phrasing(rng, len(W.PROBLEM["start_groups"]), ood))
    else:
        first = Event("start", rng.randint(*r.start), 1, _phrasing(rng, len(W.PROBLEM["start"]), ood))
    events, running = [first], first.value
    for kind in kinds:
        numbers = _event_numbers(rng, kind, running, r)
        if numbers is None:
            return None
        event = Event(kind, numbers[0], numbers[1], _phrasing(rng, len(W.PROBLEM[kind]), ood))
        running += event.sign * event.value
        if not 0 <= running <= MAX_NUMBER or event.value > MAX_NUMBER:
            return None
        events.append(event)
    final = _final(rng, running, ood) if want_final else None
    if want_final and final is None:
        return None
    return Story(name, friend, rng.choice(W.ITEMS), rng.choice(W.CONTAINERS), tuple(events), final,
                 _phrasing(rng, len(W.QUESTION), ood))


def problem_text(story: Story) -> str:
    fill = story.fill()
    parts = [W.PROBLEM[e.kind][e.phrasing].format(a=e.a, b=e.b, **fill) for e in story.events]
    if story.final is None:
        parts.append(W.QUESTION[story.question].format(**fill))
    else:
        kind, k, phrasing = story.final
        parts.append(W.FINAL_PROBLEM[kind][phrasing].format(k=k, **fill))
    return " ".join(parts)


def verify_solution(text: str, answer: int) -> list[str]:
    """Problems with a worked solution (empty = valid): false equations, numbers outside 0..999,
    a final `####` answer or last equation that differs from `answer`."""
    errors = []
    eqs = extract.annotations(text)
    if not eqs:
        errors.append("no equations")
    errors += [f"false equation {e}" for e in eqs if not extract.equation_holds(e)]
    errors += [f"number {n} out of range" for n in re.findall(r"\d+", text) if int(n) > MAX_NUMBER]
    if eqs and eqs[-1].split("=")[-1] != str(answer):
        errors.append(f"last equation {eqs[-1]} does not give {answer}")
    if not text.rstrip().endswith(f"#### {answer}"):
        errors.append(f"does not end with '#### {answer}'")
    return errors
