"""Sampling and rewarding over a list of problems: the two stages every round and evaluation run.

`generate` draws completions with the paged engine; `reward` scores them with the task's checker.
Both are functions of (problems, model state, seed) that return plain records
`{"id", "i", "text", "correct", "finish", "ntok"}`, so a later multi-process run can give each rank
a shard of the problems and gather the records on rank 0.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("reversalkit.study")


def generate(engine: Any, task: Any, problems: Sequence[Any], *, n: int, temperature: float,
             top_p: float = 1.0, max_new_tokens: int, seed: int, progress: bool = True,
             desc: str = "sample") -> list[dict[str, Any]]:
    """n completions per problem (temperature 0 = greedy, n must then be 1); records unrewarded."""
    from reversalkit.engine import SamplingParams  # noqa: PLC0415  (the engine loads on first use)

    if not problems:
        return []
    log.info("%s: %d problems x %d completion(s)", desc, len(problems), n)
    prompts = [task.format_prompt(p) for p in problems]
    params = SamplingParams(n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                            max_new_tokens=max_new_tokens, stop=tuple(getattr(task, "stop", ()) or ()),
                            seed=seed)
    outs = engine.generate(prompts, params, progress=progress)
    records = []
    for p, comps in zip(problems, outs):
        for i, c in enumerate(comps):
            records.append({"id": str(p.id), "i": i, "text": c.text, "finish": c.finish_reason,
                            "ntok": len(c.token_ids)})
    return records


def reward(task: Any, problems: Sequence[Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set `correct` on every record with `task.is_correct` (in place; returns the records)."""
    by_id = {str(p.id): p for p in problems}
    for r in records:
        r["correct"] = bool(task.is_correct(by_id[r["id"]], r["text"]))
    return records
