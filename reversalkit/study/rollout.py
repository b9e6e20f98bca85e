"""Sampling and rewarding over a list of problems: the two stages every round and evaluation run.

`generate` draws completions with the paged engine; `reward` scores them with the task's checker.
Both are functions of (problems, model state, seed) that return plain records
`{"id", "i", "text", "correct", "finish", "ntok"}`, so a later multi-process run can give each rank
a shard of the problems and gather the records on rank 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("reversalkit.study")

TrainingIds = Callable[[list[str], list[str]], list[Any]]


def generate(engine: Any, task: Any, problems: Sequence[Any], *, n: int, temperature: float,
             top_p: float = 1.0, max_new_tokens: int, seed: int, progress: bool = True,
             desc: str = "sample", training_ids: TrainingIds | None = None) -> list[dict[str, Any]]:
    """n completions per problem (temperature 0 = greedy, n must then be 1); records unrewarded.

    training_ids: `(prompts, texts) -> token ids` of the training sequences of those completions
    (e.g. `reversalkit.train.data.encode_many`). With it, the engine also returns log-probs and each
    record gets "lp": the model's summed log-prob (temperature 1) of the completion and its eos,
    where the training sequence is exactly the sampled prompt + completion ids, so that "lp" is what
    a forward pass over that sequence computes; elsewhere (stopped by length or a stop string,
    re-tokenized differently, truncated) "lp" is None.
    """
    return generate_sets(engine, [(task, problems)], n=n, temperature=temperature, top_p=top_p,
                         max_new_tokens=max_new_tokens, seed=seed, progress=progress, desc=desc,
                         training_ids=training_ids)[0]


def stop_strings(task: Any) -> tuple[str, ...]:
    return tuple(getattr(task, "stop", ()) or ())


def generate_sets(engine: Any, sets: Sequence[tuple[Any, Sequence[Any]]], *, n: int, temperature: float,
                  top_p: float = 1.0, max_new_tokens: int, seed: int, progress: bool = True,
                  desc: str = "sample", training_ids: TrainingIds | None = None
                  ) -> list[list[dict[str, Any]]]:
    """`generate` over several (task, problems) sets in one engine call (one continuous batch:
    fewer, fuller decode steps than a call per set); the records of each set, in order. The
    tasks must share their stop strings."""
    from reversalkit.engine import SamplingParams  # noqa: PLC0415  (the engine loads on first use)

    stops = {stop_strings(task) for task, _ in sets}
    if len(stops) > 1:
        raise ValueError(f"generate_sets needs tasks with the same stop strings, got {sorted(stops)}; "
                         "generate each set on its own")
    problems = [p for _, ps in sets for p in ps]
    if not problems:
        return [[] for _ in sets]
    log.info("%s: %d problems x %d completion(s)", desc, len(problems), n)
    prompts = [task.format_prompt(p) for task, ps in sets for p in ps]
    params = SamplingParams(n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                            max_new_tokens=max_new_tokens, stop=stops.pop(), seed=seed,
                            logprobs=training_ids is not None)
    outs = engine.generate(prompts, params, progress=progress)
    records = []
    for p, comps in zip(problems, outs):
        for i, c in enumerate(comps):
            records.append({"id": str(p.id), "i": i, "text": c.text, "finish": c.finish_reason,
                            "ntok": len(c.token_ids)})
    if training_ids is not None:
        _attach_logprobs(engine, prompts, outs, records, training_ids)
    out, start = [], 0
    for _, ps in sets:
        out.append(records[start:start + len(ps) * n])
        start += len(ps) * n
    return out


def _attach_logprobs(engine: Any, prompts: list[str], outs: list[list[Any]], records: list[dict[str, Any]],
                     training_ids: TrainingIds) -> None:
    flat = [(prompt, c) for prompt, comps in zip(prompts, outs) for c in comps]
    for r in records:
        r["lp"] = None
    encode = getattr(getattr(engine, "tokenizer", None), "encode_many", None)  # the sampler's prompt ids
    if encode is None:  # a sampler that does not say how it tokenized: no log-prob can be trusted
        return
    # only a sample that ended with eos can equal its training sequence (which ends with eos)
    todo = [j for j, (_, c) in enumerate(flat)
            if c.finish_reason == "stop" and getattr(c, "cumulative_logprob", None) is not None]
    trained = training_ids([flat[j][0] for j in todo], [flat[j][1].text for j in todo])
    unique = list(dict.fromkeys(prompts))
    prompt_ids = {prompt: tuple(ids) for prompt, ids in zip(unique, encode(unique))}
    for j, ids in zip(todo, trained):
        prompt, c = flat[j]
        if tuple(ids) == prompt_ids[prompt] + tuple(c.token_ids):
            records[j]["lp"] = float(c.cumulative_logprob)


def reward(task: Any, problems: Sequence[Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set `correct` on every record with `task.is_correct` (in place; returns the records)."""
    by_id = {str(p.id): p for p in problems}
    for r in records:
        r["correct"] = bool(task.is_correct(by_id[r["id"]], r["text"]))
    return records
