"""Training data: examples, tokenization with completion masks, and length-bucketed step plans.

A sequence is `prompt ids (with the tokenizer's own special prefix, e.g. bos) + completion ids +
eos`; the loss covers the completion and eos only. A *plan* lists the optimizer steps of an epoch,
each a list of micro-batches of example indices. Steps depend only on `batch_size * grad_accum`, so
8 x 1 and 1 x 8 see the same examples in the same step, which makes accumulation exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from reversalkit.tokenization import batch_encode


@dataclasses.dataclass(frozen=True)
class SFTExample:
    """One supervised example; the loss is on `completion` (+ eos) given `prompt`."""

    prompt: str
    completion: str


@dataclasses.dataclass(frozen=True)
class DPOPair:
    """One preference pair: `chosen` is preferred over `rejected` for the same `prompt`."""

    prompt: str
    chosen: str
    rejected: str


@dataclasses.dataclass(frozen=True)
class Encoded:
    """Token ids of one sequence; `ids[prompt_len:]` is the completion (ending in eos unless cut)."""

    ids: tuple[int, ...]
    prompt_len: int

    def __len__(self) -> int:
        return len(self.ids)


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no eos token; completions end with eos so that "
            "the model learns to stop. Set tokenizer.eos_token before training."
        )
    return int(tokenizer.eos_token_id)


def pad_id(tokenizer) -> int:
    """Id used for padding: pad, else eos (pads are masked out of every loss, any valid id does)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad) if pad is not None else 0


def _join(prompt_ids: list[int], completion_ids: list[int], eos: int, max_length: int,
          prompt: str) -> Encoded:
    p, c = list(prompt_ids), list(completion_ids) + [eos]
    if not p:
        raise ValueError(
            f"prompt {prompt[:40]!r} encodes to no tokens and the tokenizer adds no bos; the first "
            "completion token needs a context. Use a non-empty prompt."
        )
    excess = len(p) + len(c) - max_length
    if excess > 0:
        p = p[min(excess, len(p) - 1):]
        c = c[: max_length - len(p)]
    return Encoded(tuple(p + c), len(p))


def encode_many(tokenizer, prompts: Sequence[str], completions: Sequence[str],
                max_length: int) -> list[Encoded]:
    """Tokenize prompts and completions separately (as generation sees them) and join them.

    Too long: the prompt loses tokens from its start (keeping at least one), then the completion
    from its end. One batched tokenizer call per side (fast tokenizers encode in parallel), each
    distinct prompt encoded once.
    """
    if not prompts:
        return []
    eos = _eos_id(tokenizer)
    unique = list(dict.fromkeys(prompts))
    by_prompt = dict(zip(unique, batch_encode(tokenizer, unique, add_special_tokens=True)))
    c_ids = batch_encode(tokenizer, completions, add_special_tokens=False)
    return [_join(by_prompt[text], c, eos, max_length, text) for c, text in zip(c_ids, prompts)]


def encode(tokenizer, prompt: str, completion: str, max_length: int) -> Encoded:
    """One sequence; see `encode_many`."""
    return encode_many(tokenizer, [prompt], [completion], max_length)[0]


def encode_sft(tokenizer, examples: Sequence[SFTExample], max_length: int) -> list[Encoded]:
    return encode_many(tokenizer, [e.prompt for e in examples], [e.completion for e in examples], max_length)


def encode_dpo(tokenizer, pairs: Sequence[DPOPair], max_length: int) -> list[tuple[Encoded, Encoded]]:
    prompts = [p.prompt for p in pairs]
    chosen = encode_many(tokenizer, prompts, [p.chosen for p in pairs], max_length)
    rejected = encode_many(tokenizer, prompts, [p.rejected for p in pairs], max_length)
    return list(zip(chosen, rejected))


def collate(seqs: Sequence[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T) and the target mask (B, T): True where a completion token is predicted.

    Right padding needs no attention mask: causal attention never lets a real token see the pads
    after it, and pad positions are masked out of every loss.
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)  # (B, T)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s.ids, dtype=torch.long)
        mask[row, s.prompt_len: len(s)] = True
    return ids, mask


def num_steps(n: int, cfg) -> int:
    """Optimizer steps of the whole run for `n` examples (epochs, drop_last and max_steps applied)."""
    per_epoch = n // cfg.step_size if cfg.drop_last else -(-n // cfg.step_size)
    total = per_epoch * cfg.epochs
    return min(total, cfg.max_steps) if cfg.max_steps is not None else total


def plan_epoch(lengths: Sequence[int], cfg, generator: torch.Generator) -> list[list[list[int]]]:
    """Steps of one epoch: [step][micro-batch][example index].

    With `length_bucketing`, the shuffled order is cut into windows of `bucket_window` steps; each
    window is sorted by length (longest first) and cut into steps, and the steps of the epoch are
    shuffled again so that long and short steps alternate. Within a step examples stay sorted by
    length, so micro-batches carry little padding. Ties keep the shuffled order (stable sort).
    """
    n, size = len(lengths), cfg.step_size
    order = torch.randperm(n, generator=generator).tolist() if cfg.shuffle else list(range(n))
    if cfg.length_bucketing:
        window = size * cfg.bucket_window
        steps = []
        for start in range(0, n, window):
            chunk = sorted(order[start: start + window], key=lambda i: -lengths[i])
            steps += [chunk[k: k + size] for k in range(0, len(chunk), size)]
        if cfg.shuffle:
            steps = [steps[i] for i in torch.randperm(len(steps), generator=generator).tolist()]
    else:
        steps = [order[k: k + size] for k in range(0, n, size)]
    if cfg.drop_last:
        steps = [s for s in steps if len(s) == size]
    return [[s[k: k + cfg.batch_size] for k in range(0, len(s), cfg.batch_size)] for s in steps]


def plan_run(lengths: Sequence[int], cfg) -> list[list[list[int]]]:
    """All steps of a run (every epoch, capped at max_steps); deterministic given cfg.seed."""
    if not lengths:
        raise ValueError("no training examples: the dataset is empty")
    generator = torch.Generator().manual_seed(cfg.seed)
    steps: list[list[list[int]]] = []
    for _ in range(cfg.epochs):
        steps += plan_epoch(lengths, cfg, generator)
    if not steps:
        raise ValueError(
            f"no full optimizer step: {len(lengths)} examples < batch_size * grad_accum = {cfg.step_size} "
            "with drop_last=True; lower the batch size or set drop_last=False"
        )
    return steps[: cfg.max_steps] if cfg.max_steps is not None else steps
