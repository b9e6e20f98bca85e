"""Worked solutions of synthetic stories: one canonical and many alternative valid ones.

Solutions are GSM8K-style: one sentence per step, each equation written as
`12 + 21 = <<12+21=33>>33`, and a last line `#### 33`. Strategies (see `synthetic_gen`):
chronological (any valid event order; optional merged and fused steps), products first, and
gains/losses summed separately.
"""

from __future__ import annotations

import random

from reversalkit.tasks import synthetic_world as W
from reversalkit.tasks.synthetic_gen import MAX_NUMBER, Event, Story


class _Writer:
    """Accumulates solution sentences; `canonical` pins every choice to its first option."""

    def __init__(self, story: Story, rng: random.Random, canonical: bool):
        self.fill, self.rng, self.canonical, self.lines = story.fill(), rng, canonical, []

    def pick(self, options: tuple[str, ...]) -> str:
        return options[0] if self.canonical else self.rng.choice(options)

    def chance(self, p: float) -> bool:
        return not self.canonical and self.rng.random() < p

    def say(self, options: tuple[str, ...], **values) -> None:
        self.lines.append(self.pick(options).format(**self.fill, **values))

    @staticmethod
    def eq(lhs: list[str], value: int) -> str:
        text = " ".join(lhs)
        return f"{text} = <<{text.replace(' ', '')}={value}>>{value}"

    def product_eq(self, a: int, b: int) -> str:
        return self.eq([str(b), "*", str(a)] if self.chance(0.5) else [str(a), "*", str(b)], a * b)

    def combine_eq(self, x: int, e_sign: int, v: int) -> str:
        if e_sign > 0 and self.chance(0.5):
            return self.eq([str(v), "+", str(x)], x + v)
        return self.eq([str(x), "+" if e_sign > 0 else "-", str(v)], x + e_sign * v)


def _valid_order(start: int, events: list[Event]) -> bool:
    running = start
    for e in events:
        running += e.sign * e.value
        if not 0 <= running <= MAX_NUMBER:
            return False
    return True


def _order(story: Story, w: _Writer) -> list[Event]:
    events = list(story.events[1:])
    if w.chance(0.6):
        for _ in range(6):
            shuffled = w.rng.sample(events, len(events))
            if _valid_order(story.events[0].value, shuffled):
                return shuffled
    return events


def _start(story: Story, w: _Writer) -> int:
    first = story.events[0]
    if first.grouped:
        w.say(W.PRODUCT["start_groups"], eq=w.product_eq(first.a, first.b), a=first.a, b=first.b)
    elif w.chance(0.3):
        w.say(W.START_SENTENCE, a=first.a)
    return first.value


def _chronological(story: Story, w: _Writer) -> int:
    x = _start(story, w)
    order, merge, i = _order(story, w), w.chance(0.4), 0
    while i < len(order):
        e = order[i]
        run = [e]
        while merge and not e.grouped and i + len(run) < len(order) and not order[i + len(run)].grouped:
            run.append(order[i + len(run)])
        if len(run) > 1:
            lhs = [str(x)]
            for r in run:
                lhs += ["+" if r.sign > 0 else "-", str(r.value)]
            x += sum(r.sign * r.value for r in run)
            w.say(W.MERGED, eq=w.eq(lhs, x))
        elif e.grouped and w.chance(0.4):
            peq = w.product_eq(e.a, e.b)
            w.say(W.FUSED[e.kind], peq=peq, eq=w.combine_eq(x, e.sign, e.value))
            x += e.sign * e.value
        else:
            if e.grouped:
                w.say(W.PRODUCT[e.kind], eq=w.product_eq(e.a, e.b), a=e.a, b=e.b)
            w.say(W.COMBINE["gain" if e.sign > 0 else "loss"], eq=w.combine_eq(x, e.sign, e.value))
            x += e.sign * e.value
        i += len(run)
    return x


def _products(story: Story, w: _Writer) -> None:
    grouped = [e for e in story.events if e.grouped]
    for e in w.rng.sample(grouped, len(grouped)):
        w.say(W.PRODUCT[e.kind], eq=w.product_eq(e.a, e.b), a=e.a, b=e.b)


def _products_first(story: Story, w: _Writer) -> int:
    _products(story, w)
    x = story.events[0].value
    for e in _order(story, w):
        w.say(W.COMBINE["gain" if e.sign > 0 else "loss"], eq=w.combine_eq(x, e.sign, e.value))
        x += e.sign * e.value
    return x


def _sum_eq(w: _Writer, values: list[int]) -> str:
    values = w.rng.sample(values, len(values))
    lhs = [str(values[0])]
    for v in values[1:]:
        lhs += ["+", str(v)]
    return w.eq(lhs, sum(values))


def _gains_losses(story: Story, w: _Writer) -> int | None:
    gains = [e.value for e in story.events if e.sign > 0]
    losses = [e.value for e in story.events if e.sign < 0]
    if not losses or sum(gains) > MAX_NUMBER or sum(losses) > MAX_NUMBER:
        return None
    _products(story, w)
    if len(gains) > 1:
        w.say(W.GAINS_TOTAL, eq=_sum_eq(w, gains))
    if len(losses) > 1:
        w.say(W.LOSSES_TOTAL, eq=_sum_eq(w, losses))
    total = sum(gains) - sum(losses)
    w.say(W.NET, eq=w.eq([str(sum(gains)), "-", str(sum(losses))], total))
    return total


def _finish(story: Story, w: _Writer, total: int) -> str:
    if story.final is not None:
        kind, k, _ = story.final
        if kind == "times":
            lhs = [str(k), "*", str(total)] if w.chance(0.5) else [str(total), "*", str(k)]
        else:
            lhs = [str(total), "/", str(k)]
        w.say(W.FINAL_SOLUTION[kind], eq=w.eq(lhs, story.answer()))
    w.lines.append(f"#### {story.answer()}")
    return "\n".join(w.lines)


def render_solution(story: Story, rng: random.Random, canonical: bool = False) -> str:
    w = _Writer(story, rng, canonical)
    if canonical:
        return _finish(story, w, _chronological(story, w))
    strategy = rng.choice(("chronological", "chronological", "products_first", "gains_losses"))
    total = None
    if strategy == "gains_losses":
        total = _gains_losses(story, w)
    elif strategy == "products_first":
        total = _products_first(story, w)
    if total is None:
        w = _Writer(story, rng, canonical=False)
        total = _chronological(story, w)
    return _finish(story, w, total)


def solutions(story: Story, rng: random.Random, n: int) -> list[str]:
    """Up to `n` distinct valid solutions, the canonical one first."""
    out = [render_solution(story, rng, canonical=True)]
    seen = set(out)
    for _ in range(8 * n):
        if len(out) >= n:
            break
        text = render_solution(story, rng)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out
