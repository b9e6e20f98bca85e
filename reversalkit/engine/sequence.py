"""Request-level types of the sampler: SamplingParams (what to generate), Completion (what came
out) and Sequence (the mutable state of one sample while it is waiting or running).

A prompt asked for n samples enters the scheduler as one Sequence with `num_children = n`; after
its prompt is prefilled it forks into n sequences that share the prompt's KV blocks.
"""

from __future__ import annotations

import dataclasses
import enum

from reversalkit.config import Config, check, option


@dataclasses.dataclass
class SamplingParams(Config):
    """How to sample: one object applies to every prompt of an `Engine.generate` call."""

    n: int = option(1, "completions per prompt")
    temperature: float = option(1.0, "softmax temperature; 0 means greedy (argmax)")
    top_p: float = option(1.0, "nucleus sampling: keep the most likely tokens up to this mass (1 = off)")
    top_k: int = option(0, "keep only the k most likely tokens (0 = off)")
    max_new_tokens: int = option(256, "tokens to generate at most (also capped by the model's context)")
    stop: tuple[str, ...] = option((), "strings that end a completion; the text is cut before them")
    seed: int | None = option(
        None, "per-request seed: the same seed, prompt and n give the same completions whatever else "
        "shares the batch; None draws a fresh seed per call")
    logprobs: bool = option(False, "also return per-token log-probabilities under the model (T = 1)")

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)
        check(isinstance(self.n, int) and self.n >= 1, f"n must be an integer >= 1, got {self.n!r}")
        check(self.temperature >= 0, f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        check(isinstance(self.top_k, int) and self.top_k >= 0,
              f"top_k must be an integer >= 0, got {self.top_k!r}")
        check(isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
              f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        check(all(isinstance(s, str) and s for s in self.stop),
              f"stop must hold non-empty strings, got {self.stop!r}")
        check(self.seed is None or isinstance(self.seed, int),
              f"seed must be an int or None, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclasses.dataclass
class Completion:
    """One generated sample. `token_ids` are the new tokens (EOS included when it ended the sample);
    `text` is their decoding without special tokens, cut before a stop string; `finish_reason` is
    "stop" (EOS or a stop string) or "length" (max_new_tokens or the model's context).
    `cumulative_logprob` sums the model's log-probabilities (temperature 1, no truncation) of the
    tokens and is None unless SamplingParams.logprobs; `token_logprobs` lists them."""

    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    finish_reason: str
    token_logprobs: list[float] | None = None


class SeqStatus(enum.Enum):
    WAITING = 0
    RUNNING = 1
    FINISHED = 2


@dataclasses.dataclass(eq=False)
class Sequence:
    """State of one sample. `token_ids` holds prompt + generated tokens; the KV of every token but
    the last is in the blocks of `block_table` while the sequence runs."""

    seq_id: int
    request_id: int  # index of its prompt in the generate() call
    sample_index: int  # which of the prompt's n samples (the child index after the fork)
    token_ids: list[int]
    num_prompt_tokens: int
    max_tokens: int  # total length (prompt + generated) at which it stops with "length"
    rng_key: int  # per-request sampling stream (see sampling.request_key)
    num_children: int = 1  # samples to fork into after the prompt's prefill
    block_table: list[int] = dataclasses.field(default_factory=list)
    num_cached_tokens: int = 0
    status: SeqStatus = SeqStatus.WAITING
    cumulative_logprob: float = 0.0
    token_logprobs: list[float] | None = None
    finish_reason: str | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_generated(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def generated(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]
