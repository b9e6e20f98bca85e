"""Build a round's training set D_t from rewarded self-samples.

Samples are plain records `{"id": problem_id, "i": sample_index, "text": completion, "correct":
bool}`. Iterative SFT keeps correct samples (all, or distinct texts, optionally capped per
problem); Iterative DPO pairs correct with incorrect samples of the same problem: each problem's
correct and incorrect samples are shuffled with a seeded generator and zipped, giving
min(#correct, #incorrect) pairs, capped per problem. Everything is seeded and independent of the
order problems arrive in, so a resumed run rebuilds the same D_t.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

SFT_SELECTIONS = ("all", "dedup")


def group_by_problem(samples: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Problem id -> its samples, in sample-index order."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in samples:
        groups[str(s["id"])].append(s)
    return {pid: sorted(g, key=lambda s: s["i"]) for pid, g in groups.items()}


def _rng(seed: int, problem_id: str) -> random.Random:
    # Per-problem generator: the shuffle of one problem does not depend on any other problem.
    digest = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def select_sft(samples: Iterable[dict[str, Any]], *, selection: str = "all",
               max_per_problem: int | None = None, seed: int = 0) -> list[tuple[str, str]]:
    """(problem_id, completion) for the correct samples kept for Iterative SFT.

    selection "all" keeps every correct sample (duplicates weigh more, as in plain rejection
    sampling); "dedup" keeps each distinct completion text once. `max_per_problem` keeps a seeded
    random subset of that size per problem. Output is ordered by problem id, then sample index.
    """
    if selection not in SFT_SELECTIONS:
        raise ValueError(f"sft selection must be one of {SFT_SELECTIONS}, got {selection!r}")
    if max_per_problem is not None and max_per_problem < 1:
        raise ValueError(f"max_per_problem must be >= 1 or None, got {max_per_problem}")
    out: list[tuple[str, str]] = []
    for pid, group in sorted(group_by_problem(samples).items()):
        kept = [s for s in group if s["correct"]]
        if selection == "dedup":
            seen: set[str] = set()
            kept = [s for s in kept if not (s["text"] in seen or seen.add(s["text"]))]
        if max_per_problem is not None and len(kept) > max_per_problem:
            kept = sorted(_rng(seed, pid).sample(kept, max_per_problem), key=lambda s: s["i"])
        out += [(pid, s["text"]) for s in kept]
    return out


def build_pairs(samples: Iterable[dict[str, Any]], *, max_per_problem: int | None = None,
                seed: int = 0) -> list[tuple[str, str, str]]:
    """(problem_id, chosen, rejected) preference pairs for Iterative DPO.

    Per problem: shuffle the correct and the incorrect samples (seeded per problem), zip them, keep
    the first min(#correct, #incorrect, max_per_problem) pairs. Problems with no correct or no
    incorrect sample give no pair.
    """
    if max_per_problem is not None and max_per_problem < 1:
        raise ValueError(f"max_per_problem must be >= 1 or None, got {max_per_problem}")
    out: list[tuple[str, str, str]] = []
    for pid, group in sorted(group_by_problem(samples).items()):
        rng = _rng(seed, pid)
        good = [s["text"] for s in group if s["correct"]]
        bad = [s["text"] for s in group if not s["correct"]]
        rng.shuffle(good)
        rng.shuffle(bad)
        n = min(len(good), len(bad))
        if max_per_problem is not None:
            n = min(n, max_per_problem)
        out += [(pid, good[j], bad[j]) for j in range(n)]
    return out
