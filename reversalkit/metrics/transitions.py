"""Improvement and regression sets between two checkpoints (the paper's IS(t) and RS(t)).

Given per-problem greedy correctness of M1 (`base`) and of M_t (`current`), `transitions` splits
the problems into improved (IS: M_t right, M1 wrong), regressed (RS: M1 right, M_t wrong),
stable_correct and stable_wrong. `Transitions.improved_pass_at_k` gives M1's pass@N on IS from
M1's sample counts: near 1.0 means M_t's "new" solves were already in M1's generation space.

    t = transitions({"p1": False, "p2": True}, {"p1": True, "p2": True})
    t.improved                            # frozenset({'p1'})
    t.improved_pass_at_k({"p1": (50, 4), "p2": (50, 40)})   # {1: 0.08, 2: ..., 50: 1.0}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Mapping

import numpy as np

from .accuracy import pass_at_k_curve

__all__ = ["Transitions", "transitions", "pass_at_k_on"]


def _as_flag(pid: Hashable, value) -> bool:
    if isinstance(value, bool | np.bool_) or (isinstance(value, int | np.integer) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"correctness of problem {pid!r} must be a bool, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Transitions:
    """Problem ids by (base correct, current correct); the four sets partition the problems."""

    improved: frozenset  # IS: current right, base wrong
    regressed: frozenset  # RS: base right, current wrong
    stable_correct: frozenset  # right in both
    stable_wrong: frozenset  # wrong in both

    @property
    def num_problems(self) -> int:
        return len(self.improved) + len(self.regressed) + len(self.stable_correct) + len(self.stable_wrong)

    @property
    def base_accuracy(self) -> float:
        """Greedy accuracy of the base checkpoint (NaN without problems)."""
        if self.num_problems == 0:
            return float("nan")
        return (len(self.regressed) + len(self.stable_correct)) / self.num_problems

    @property
    def current_accuracy(self) -> float:
        """Greedy accuracy of the current checkpoint (NaN without problems)."""
        if self.num_problems == 0:
            return float("nan")
        return (len(self.improved) + len(self.stable_correct)) / self.num_problems

    def summary(self) -> dict[str, float]:
        """Set sizes and accuracies, for reports and JSON artifacts."""
        return {
            "num_problems": self.num_problems,
            "improved": len(self.improved),
            "regressed": len(self.regressed),
            "stable_correct": len(self.stable_correct),
            "stable_wrong": len(self.stable_wrong),
            "base_accuracy": self.base_accuracy,
            "current_accuracy": self.current_accuracy,
        }

    def improved_pass_at_k(self, base_counts: Mapping[Hashable, tuple[int, int]],
                           ks: Iterable[int] | None = None) -> dict[int, float]:
        """The base model's mean pass@k over the improvement set.

        base_counts: problem id -> (n, c) samples drawn / correct for the base model (M1); it
        must cover every improved id (extra ids are ignored). ks: default 1, 2, 4, ..., min n.
        Returns {k: mean pass@k over IS}; {} when IS is empty.
        """
        return pass_at_k_on(self.improved, base_counts, ks)

    def regressed_pass_at_k(self, base_counts: Mapping[Hashable, tuple[int, int]],
                            ks: Iterable[int] | None = None) -> dict[int, float]:
        """Like `improved_pass_at_k`, over the regression set."""
        return pass_at_k_on(self.regressed, base_counts, ks)


def transitions(base: Mapping[Hashable, bool], current: Mapping[Hashable, bool]) -> Transitions:
    """Split problems by greedy correctness of the base (M1) and current (M_t) checkpoints.

    base, current: problem id -> bool, over the same ids (ValueError naming the ids otherwise).
    """
    only_base = set(base) - set(current)
    only_current = set(current) - set(base)
    if only_base or only_current:
        raise ValueError(
            "base and current must cover the same problems; "
            f"only in base: {sorted(map(repr, only_base))[:5]} ({len(only_base)}), "
            f"only in current: {sorted(map(repr, only_current))[:5]} ({len(only_current)})")
    sets: dict[tuple[bool, bool], set] = {(a, b): set() for a in (False, True) for b in (False, True)}
    for pid, b in base.items():
        sets[(_as_flag(pid, b), _as_flag(pid, current[pid]))].add(pid)
    return Transitions(
        improved=frozenset(sets[(False, True)]),
        regressed=frozenset(sets[(True, False)]),
        stable_correct=frozenset(sets[(True, True)]),
        stable_wrong=frozenset(sets[(False, False)]),
    )


def pass_at_k_on(ids: Iterable[Hashable], counts: Mapping[Hashable, tuple[int, int]],
                 ks: Iterable[int] | None = None) -> dict[int, float]:
    """Mean pass@k over the problems `ids`, from counts: id -> (n, c).

    ks defaults to 1, 2, 4, ..., min n over those problems. Returns {} when ids is empty. The mean
    runs over the ids in sorted order, so a set of ids (whose order follows the process's string
    hashing) gives the same float in every process.
    """
    ids = sorted(ids, key=str)
    if not ids:
        return {}
    missing = [pid for pid in ids if pid not in counts]
    if missing:
        raise ValueError(f"no sample counts for {len(missing)} problem(s), e.g. {missing[:5]!r}")
    n = np.array([counts[pid][0] for pid in ids], dtype=np.int64)
    c = np.array([counts[pid][1] for pid in ids], dtype=np.int64)
    return pass_at_k_curve(n, c, ks)
