"""The stages of a study as functions: build M0, train M1, build D_t, train a round, evaluate.

Each takes what it needs explicitly (model, tokenizer, engine, problems, configs, seeds) and
returns plain data; the loop (`reversalkit.study.loop`) decides what runs when and stores results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from reversalkit.device import resolve_device
from reversalkit.dist import SINGLE, Group
from reversalkit.study import evaluate, rollout
from reversalkit.study.config import StudyConfig
from reversalkit.study.data import build_pairs, select_sft
from reversalkit.study.plan import derive_seed
from reversalkit.train import DPOPair, SFTExample, TrainConfig, reference_logprobs, train_dpo, train_sft

log = logging.getLogger("reversalkit.study")


def gold_completions(problem: Any, all_solutions: bool) -> list[str]:
    """Gold worked solutions of a problem for M1 (every listed solution when `all_solutions`)."""
    sols = list((problem.meta or {}).get("solutions") or []) if all_solutions else []
    if not sols:
        sols = [problem.solution if problem.solution is not None else str(problem.answer)]
    return sols


def build_base_model(cfg: StudyConfig, task: Any, texts: list[str], device: str):
    """M0: the tiny Llama with a word tokenizer over `texts`, or a pretrained checkpoint."""
    from reversalkit import models  # noqa: PLC0415

    if cfg.model != "tiny":
        tok = models.load_tokenizer(cfg.model)
        return models.load_model(cfg.model, device=device, dtype=cfg.dtype, progress=cfg.progress), tok
    tm = cfg.tiny_model
    tok = models.build_word_tokenizer(texts, max_number=tm.max_number)
    model = models.tiny_llama(len(tok), hidden_size=tm.hidden_size, num_layers=tm.num_layers,
                              num_heads=tm.num_heads, num_kv_heads=tm.num_kv_heads,
                              intermediate_size=tm.intermediate_size,
                              max_position_embeddings=tm.max_position_embeddings, seed=cfg.seed)
    return model.to(device), tok


def train_m1(model, tok, task: Any, train: Sequence[Any], cfg: StudyConfig, *,
             progress: bool, group: Group = SINGLE) -> dict[str, Any]:
    """SFT of M0 on the gold train solutions, in place; returns the training record. The ranks
    of `group` share every step (`reversalkit.train.parallel`)."""
    examples = [SFTExample(task.format_prompt(p), sol) for p in train
                for sol in gold_completions(p, cfg.m1_all_solutions)]
    tcfg = cfg.m1_train.replace(seed=derive_seed(cfg.seed, "train", "m1"))
    log.info("M1: SFT on %d gold solutions of %d problems", len(examples), len(train))
    torch.manual_seed(tcfg.seed)
    result = train_sft(model, tok, examples, tcfg, progress=progress, group=group)
    return {"examples": len(examples), **_train_record(result)}


def _train_record(result: Any) -> dict[str, Any]:
    d = result.to_dict()
    losses = d.get("losses") or []
    names = ("steps", "losses", "reward_accuracy", "chosen_rewards", "rejected_rewards")
    keep = {k: d[k] for k in names if k in d}
    keep["loss_first"] = losses[0] if losses else None
    keep["loss_last"] = losses[-1] if losses else None
    return keep


def round_data(cfg: StudyConfig, kind: str, node: str, samples: list[dict[str, Any]],
               problems: dict[str, Any], task: Any) -> tuple[list[Any], dict[str, Any]]:
    """D_t of a round: SFTExamples or DPOPairs, and its statistics."""
    seed = derive_seed(cfg.seed, "data", node)
    if kind in ("sft", "gold"):
        kept = select_sft(samples, selection=cfg.sft_selection, max_per_problem=cfg.sft_max_per_problem,
                          seed=seed)
        if kind == "gold":
            kept = gold_in_place(kept, problems)
        data = [SFTExample(task.format_prompt(problems[pid]), text) for pid, text in kept]
        stats = {"examples": len(data), "problems": len({pid for pid, _ in kept})}
    else:
        pairs = build_pairs(samples, max_per_problem=cfg.pairs_per_problem, seed=seed)
        data = [DPOPair(task.format_prompt(problems[pid]), good, bad) for pid, good, bad in pairs]
        stats = {"pairs": len(data), "problems": len({pid for pid, _, _ in pairs})}
    return data, stats


def gold_in_place(kept: list[tuple[str, str]], problems: dict[str, Any]) -> list[tuple[str, str]]:
    """The gold control's D_t: each kept self-sample replaced by a gold solution of its problem (the
    j-th sample of a problem by its j-th gold solution, cycling), so the control trains on the same
    problems, as many examples of each, in the same number of steps."""
    seen: dict[str, int] = {}
    out = []
    for pid, _ in kept:
        gold = gold_completions(problems[pid], True)
        j = seen.get(pid, 0)
        seen[pid] = j + 1
        out.append((pid, gold[j % len(gold)]))
    return out


def round_train_config(cfg: StudyConfig, kind: str, node: str) -> TrainConfig:
    base = cfg.sft_train if kind in ("sft", "gold") else cfg.dpo_train
    return base.replace(seed=derive_seed(cfg.seed, "train", node))


def compute_reference(model, tok, pairs: list[Any], tcfg: TrainConfig, group: Group = SINGLE) -> torch.Tensor:
    """(P, 2) summed log-probs of (chosen, rejected) under the current weights of `model` (the
    ranks of `group` share the batches; every rank gets the whole tensor)."""
    with torch.no_grad():
        return reference_logprobs(model, tok, pairs, tcfg, group=group).detach().float().cpu()


def sampled_logprobs_exact(cfg: StudyConfig, device: str) -> bool:
    """Whether the sampler's log-probs equal the DPO reference pass's up to float32 rounding: both
    in float32 (the engine runs the study dtype; training runs float32 on the CPU) and no autocast."""
    if not cfg.reference_from_samples or not any(k == "dpo" for m in cfg.methods for k in cfg.round_kinds(m)):
        return False
    if device == "cpu":
        return cfg.dtype in ("auto", "float32")
    return cfg.dtype == "float32" and cfg.dpo_train.autocast_bf16 == "off"


def training_ids(tok, max_length: int):
    """`(prompts, texts) -> token ids` of the training sequences (see `rollout.generate`)."""
    from reversalkit.train.data import encode_many  # noqa: PLC0415

    return lambda prompts, texts: [e.ids for e in encode_many(tok, prompts, texts, max_length)]


def sampled_reference(pairs: Sequence[Any], samples: Sequence[dict[str, Any]],
                      prompts: dict[str, str]) -> torch.Tensor:
    """(P, 2) float32: the samples' "lp" for each pair's (chosen, rejected), NaN where none.

    prompts: problem id -> formatted prompt (pairs carry the prompt text, samples the problem id).
    """
    lp: dict[tuple[str, str], float] = {}
    for r in samples:
        if r.get("lp") is not None and r["id"] in prompts:
            lp.setdefault((prompts[r["id"]], r["text"]), float(r["lp"]))
    nan = float("nan")
    rows = [[lp.get((p.prompt, p.chosen), nan), lp.get((p.prompt, p.rejected), nan)] for p in pairs]
    return torch.tensor(rows, dtype=torch.float32).reshape(len(pairs), 2)


def dpo_reference(pairs: list[Any], tcfg: TrainConfig, load_model: Callable[[], tuple[Any, Any]], *,
                  sampled: torch.Tensor | None = None, group: Group = SINGLE) -> tuple[torch.Tensor, int]:
    """(P, 2) reference log-probs of D_t and how many pairs came from `sampled`.

    sampled: `sampled_reference` of the model that drew D_t when it is the reference (None
    otherwise); pairs it lacks go through `compute_reference` with `load_model()`'s model, which is
    loaded only if some pair needs it.
    """
    ref = torch.full((len(pairs), 2), float("nan"))
    if sampled is not None:
        ref.copy_(sampled)
    todo = torch.isnan(ref).any(1).nonzero().flatten().tolist()
    if todo:
        model, tok = load_model()
        ref[todo] = compute_reference(model, tok, [pairs[i] for i in todo], tcfg, group)
    return ref, len(pairs) - len(todo)


def train_round(model, tok, kind: str, data: list[Any], tcfg: TrainConfig, ref: torch.Tensor | None,
                *, progress: bool, group: Group = SINGLE) -> dict[str, Any]:
    """One round of SFT or DPO on D_t, in place; an empty D_t leaves the model unchanged. The
    ranks of `group` share every step."""
    if not data:
        log.warning("round has no training data (no %s); the iterate equals its parent",
                    "correct samples" if kind == "sft" else "correct/incorrect pairs")
        return {"steps": 0, "losses": [], "loss_first": None, "loss_last": None}
    torch.manual_seed(tcfg.seed)
    if kind in ("sft", "gold"):
        result = train_sft(model, tok, data, tcfg, progress=progress, group=group)
    else:
        result = train_dpo(model, tok, data, ref, tcfg, progress=progress, group=group)
    return _train_record(result)


def evaluate_sets(engine, sets: dict[str, tuple[Any, Sequence[Any]]], cfg: StudyConfig, *, sbert: Any,
                  progress: bool, group: Group = SINGLE
                  ) -> dict[str, tuple[dict[str, Any], list[dict], list[dict]]]:
    """split -> (metrics, greedy, samples) of every test set (split -> (task, problems)).

    Each rank of `group` draws and rewards its shard of every set (`draw_sets`); rank 0 gathers the
    records in problem order and computes the metrics; other ranks return {}.
    """
    local = {split: (task, list(problems)[group.shard(len(problems))])
             for split, (task, problems) in sets.items()}
    parts = group.gather(draw_sets(engine, local, cfg, progress=progress))
    if parts is None:
        return {}
    out = {}
    for split, (task, problems) in sets.items():
        greedy = [r for part in parts for r in part[split][0]]
        samples = [r for part in parts for r in part[split][1]]
        out[split] = (score_set(task, problems, greedy, samples, cfg, split, sbert=sbert), greedy, samples)
    return out


def draw_sets(engine, sets: dict[str, tuple[Any, Sequence[Any]]], cfg: StudyConfig, *,
              progress: bool) -> dict[str, tuple[list[dict], list[dict]]]:
    """split -> (greedy, samples): rewarded records of every test set. The greedy passes of sets
    whose tasks share their stop strings run as one engine call (greedy draws no random numbers,
    so they do not depend on the grouping).

    Evaluation samples use one seed per test set, the same for every iterate, so differences
    between iterates are not sampling noise of different random streams.
    """
    by_stop: dict[tuple[str, ...], list[str]] = {}
    for split, (task, _) in sets.items():
        by_stop.setdefault(rollout.stop_strings(task), []).append(split)
    greedy: dict[str, list[dict]] = {}
    for splits in by_stop.values():
        outs = rollout.generate_sets(engine, [sets[s] for s in splits], n=1, temperature=0.0,
                                     max_new_tokens=cfg.max_new_tokens, seed=derive_seed(cfg.seed, "greedy"),
                                     progress=progress, desc=f"greedy {', '.join(splits)}")
        greedy.update(zip(splits, outs))
    out = {}
    for split, (task, problems) in sets.items():
        rollout.reward(task, problems, greedy[split])
        samples: list[dict[str, Any]] = []
        n = cfg.samples_for(split)
        if n > 0:
            samples = rollout.generate(engine, task, problems, n=n,
                                       temperature=cfg.eval_temperature or cfg.temperature, top_p=cfg.top_p,
                                       max_new_tokens=cfg.max_new_tokens,
                                       seed=derive_seed(cfg.seed, "eval", split), progress=progress,
                                       desc=f"eval {split}")
            rollout.reward(task, problems, samples)
        out[split] = (greedy[split], samples)
    return out


def m1_is_samples(engine, task: Any, problems: Sequence[Any], cfg: StudyConfig, *, progress: bool,
                  group: Group = SINGLE) -> list[dict[str, Any]] | None:
    """M1's `cfg.m1_extra_samples` more rewarded samples per ID test problem, for its pass@N on the
    improvement sets only. They use a seed of their own, so every other metric of M1 stays the one
    its `eval_samples` give. Rank 0 returns every record in problem order, other ranks None."""
    return _sample_sharded(engine, task, problems, cfg, group, n=cfg.m1_extra_samples,
                           temperature=cfg.eval_temperature or cfg.temperature,
                           seed=derive_seed(cfg.seed, "is", "id"), progress=progress,
                           desc="M1 samples for pass@N on IS")


def _sample_sharded(engine, task: Any, problems: Sequence[Any], cfg: StudyConfig, group: Group, *,
                    n: int, temperature: float, seed: int, progress: bool, desc: str,
                    training_ids: Any = None) -> list[dict[str, Any]] | None:
    """Each rank samples and rewards its shard of `problems`; rank 0 gets every record in problem
    order, the other ranks None."""
    problems = list(problems)[group.shard(len(problems))]
    records = rollout.generate(engine, task, problems, n=n, temperature=temperature, top_p=cfg.top_p,
                               max_new_tokens=cfg.max_new_tokens, seed=seed, progress=progress, desc=desc,
                               training_ids=training_ids)
    parts = group.gather(rollout.reward(task, problems, records))
    return None if parts is None else [r for part in parts for r in part]


def score_set(task: Any, problems: Sequence[Any], greedy: list[dict], samples: list[dict], cfg: StudyConfig,
              split: str, *, sbert: Any) -> dict[str, Any]:
    """The metrics of one test set from its rewarded greedy and sampled records."""
    return evaluate.summarize_split(
        problems, greedy, samples, ks=cfg.ks, n_boot=cfg.bootstrap, ci=cfg.ci,
        seed=derive_seed(cfg.seed, "bootstrap", split), level_key=cfg.level_key,
        equations=getattr(task, "equations", None), sbert=sbert,
        diversity_max_problems=cfg.diversity_max_problems, sbert_max_problems=cfg.sbert_max_problems,
        diversity_group_size=cfg.diversity_group_size,
        sbert_batch_size=cfg.sbert_batch_size or sbert_batch_size(sbert))


def sbert_batch_size(sbert: Any) -> int:
    """Default SBERT batch for the sentence model's device: 256 on a GPU, 64 on a CPU (measured on a
    2-core CPU for a test set's samples: 4.9 s at 64, 5.9 s at 256, the longer batches padding more)."""
    return 256 if str(getattr(sbert, "device", "cpu")).startswith("cuda") else 64


def sample_train(engine, task: Any, problems: Sequence[Any], cfg: StudyConfig, node: str, *,
                 progress: bool, tokenizer: Any = None, group: Group = SINGLE) -> list[dict[str, Any]] | None:
    """N rewarded samples per train problem from the iterate `node` (the next round's raw data).

    tokenizer: the training tokenizer; given, and where `sampled_logprobs_exact`, records carry
    "lp" (see `rollout.generate`) for the DPO reference. Each rank of `group` samples its shard
    of the problems; rank 0 returns every record in problem order, other ranks None. A sample's
    random stream depends on its prompt, index and seed only, so the records do not depend on
    the number of ranks.
    """
    ids = None
    if tokenizer is not None and sampled_logprobs_exact(cfg, resolve_device(cfg.device)):
        ids = training_ids(tokenizer, cfg.dpo_train.max_length)
    return _sample_sharded(engine, task, problems, cfg, group, n=cfg.samples_per_problem,
                           temperature=cfg.temperature, seed=derive_seed(cfg.seed, "sample", node),
                           progress=progress, desc=f"sample {node}", training_ids=ids)
