"""Token sampling for the engine: greedy or `reversalkit.kernels.sample_top_p` (temperature, top-k,
top-p with Hugging Face semantics), the model's log-probs of the chosen tokens, per-request random
streams, and stop strings.

Randomness never comes from a shared generator: a sample's k-th token uses the uniforms of its
stream key (`request_key`: a hash of the seed and the prompt tokens, plus the sample's index) and
counter k. A sample therefore gets the same tokens whatever else shares the batch, and after a
preemption (its KV is recomputed) it continues with exactly the draws it would have made.

    sampler = Sampler(params)
    tokens, logprobs = sampler(logits, keys, counters)   # (B, V) -> (B,), (B,) | None
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from reversalkit.engine.sequence import SamplingParams
from reversalkit.kernels.sample_top_p import sample_top_p


def request_key(seed: int, prompt_ids: list[int]) -> int:
    """64-bit key of a request's random streams; sample j of the request uses key + j."""
    h = hashlib.blake2b(digest_size=8)
    h.update(int(seed).to_bytes(16, "little", signed=True))
    h.update(np.asarray(prompt_ids, dtype=np.int64).tobytes())
    return int.from_bytes(h.digest(), "little")


class Sampler:
    """Picks the next token of every row; rows are independent of each other.

    backend: `sample_top_p`'s ("auto" | "triton" | "cpp" | "torch"; "torch" is the others' oracle).
    """

    def __init__(self, params: SamplingParams, backend: str = "auto"):
        self.params = params
        self.backend = backend

    def __call__(self, logits: torch.Tensor, keys: torch.Tensor | None, counters: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """logits: (B, V); keys, counters: (B,) int64 (unused when greedy)
        -> tokens (B,) int64 and the model's log-probs of them (B,) or None."""
        p = self.params
        if p.greedy:
            tokens = logits.argmax(-1)
        else:
            tokens = sample_top_p(logits, p.temperature, p.top_p, keys, counters, top_k=p.top_k,
                                  backend=self.backend)
        logprobs = None
        if p.logprobs:
            lf = logits.float()
            logprobs = lf.gather(1, tokens[:, None]).squeeze(1) - lf.logsumexp(-1)
        return tokens, logprobs


class StopChecker:
    """Finds stop strings in generated text without decoding every sample at every step.

    A stop string can only be completed by a token whose text contains the stop string's last
    character (or an incomplete byte sequence, decoded as U+FFFD); `candidates` marks those tokens
    once per vocabulary, and only samples that just produced one are decoded.
    """

    def __init__(self, stop: tuple[str, ...], decode, vocab_size: int, device: torch.device):
        self.stop = stop
        self.decode = decode
        self.mask: torch.Tensor | None = None
        if not stop:
            return
        last_chars = {s[-1] for s in stop} | {"\ufffd"}
        hits = [i for i in range(vocab_size) if any(c in decode([i]) for c in last_chars)]
        self.mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        if hits:
            self.mask[torch.tensor(hits, device=device)] = True
        # A stop string spans at most len(stop) tokens that each add >= 1 character; a few more
        # tokens cover byte-level pieces that only form a character together.
        self.window = max(len(s) for s in stop) + 4

    def candidates(self, tokens: torch.Tensor) -> list[int]:
        """Row indices whose new token may complete a stop string. tokens: (B,)."""
        if self.mask is None:
            return []
        return self.mask[tokens].nonzero().flatten().tolist()

    def hit(self, generated: list[int]) -> bool:
        text = self.decode(generated[-self.window:])
        return any(s in text for s in self.stop)

    def truncate(self, text: str) -> str:
        """The text before the earliest stop string."""
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=len(text))
        return text[:cut]
