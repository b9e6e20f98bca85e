"""Token sampling: temperature, top-k, top-p (Hugging Face semantics), greedy, stop strings, and
counter-based per-request randomness.

Randomness never comes from a shared generator: the uniform number that picks the k-th token of a
sample is a hash of (request key, k), where the request key hashes (seed, prompt tokens) plus the
sample's index. A sample therefore gets the same tokens whatever else shares the batch, and after a
preemption (its KV is recomputed) it continues with exactly the draws it would have made. One
uniform per token is enough: the token is found by inverse-CDF search over the (truncated)
distribution, which is exact for any distribution. On the CPU, temperature + top-p (top_k 0) runs
in reversalkit._C (`sample_native`: the same draws, one pass per row without batch temporaries),
on CUDA in a Triton program per row (`triton_sampling.sample_top_p_triton`); the torch functions
here are their fallback and test oracle.

    sampler = Sampler(params)
    tokens, logprobs = sampler(logits, keys, counters)   # (B, V) -> (B,), (B,) | None
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from reversalkit._ext import native
from reversalkit.engine.sequence import SamplingParams

_MASK64 = (1 << 64) - 1


def _signed(c: int) -> int:
    """A 64-bit constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _M1, _M2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def request_key(seed: int, prompt_ids: list[int]) -> int:
    """64-bit key of a request's random streams; sample j of the request uses key + j."""
    h = hashlib.blake2b(digest_size=8)
    h.update(int(seed).to_bytes(16, "little", signed=True))
    h.update(np.asarray(prompt_ids, dtype=np.int64).tobytes())
    return int.from_bytes(h.digest(), "little")


def as_int64(key: int) -> int:
    """An unsigned 64-bit key as the int64 with the same bits (how row buffers store keys)."""
    return _signed(key & _MASK64)


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    return (x >> s) & ((1 << (64 - s)) - 1)  # logical shift of the int64 bit pattern


def counter_uniforms(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """Uniforms in (0, 1), one per (key, counter) pair: splitmix64 of key + counter * golden ratio.

    keys, counters: (B,) int64 (keys hold uint64 bit patterns; int64 arithmetic wraps like uint64)
    -> (B,) float64, never exactly 0 or 1. Runs on the tensors' device.
    """
    x = keys + counters * _GOLDEN
    x = (x ^ _shr(x, 30)) * _M1
    x = (x ^ _shr(x, 27)) * _M2
    x = x ^ _shr(x, 31)
    return (_shr(x, 11).double() + 0.5) * (2.0 ** -53)


def process_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p, as Hugging Face's logits warpers apply them.

    logits: (B, V) -> float32 (B, V) with removed tokens at -inf. Not for greedy params.
    """
    x = logits.float() / params.temperature
    if params.top_k > 0:
        k = min(params.top_k, x.shape[-1])
        kth = torch.topk(x, k, dim=-1).values[:, -1:]  # (B, 1)
        x = x.masked_fill(x < kth, float("-inf"))
    if params.top_p < 1.0:
        x = process_logits_top_p(x, params.top_p)
    return x


def sample_from_logits(x: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling. x: (B, V) processed logits, uniforms: (B,) in (0, 1) -> (B,) int64."""
    return _inverse_cdf(x.softmax(-1), uniforms)


def _inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """probs: (B, V) unnormalised non-negative weights -> (B,) index drawn with them."""
    cdf = probs.cumsum(-1)
    target = (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(1)  # scale by the total: rounding-proof
    return torch.searchsorted(cdf, target).squeeze(1).clamp_(max=probs.shape[-1] - 1)


def process_logits_top_p(x: torch.Tensor, top_p: float) -> torch.Tensor:
    """HF's TopPLogitsWarper: drop the least likely tokens whose total mass is <= 1 - top_p."""
    sorted_x, order = torch.sort(x, dim=-1)  # ascending, like HF
    cum = sorted_x.softmax(-1).cumsum(-1)
    remove = cum <= 1 - top_p
    remove[:, -1] = False  # always keep the most likely token
    return x.masked_fill(remove.scatter(1, order, remove), float("-inf"))


_RETRY_SALT = 0xD1B54A32D192ED03


def sample_top_p(x: torch.Tensor, top_p: float, keys: torch.Tensor, counters: torch.Tensor,
                 max_rounds: int = 8) -> torch.Tensor:
    """Nucleus sampling by rejection, without sorting the vocabulary.

    HF keeps a token when the probability mass ranked above it is below top_p. Drawing from the
    full distribution and redrawing until the token is kept samples exactly the renormalised
    nucleus; a draw is kept with probability >= top_p, so ~1 / top_p rounds on average, each a
    few vocabulary-wide elementwise ops (a full sort of 256 x 1078 costs ~6x more, measured), and
    none for a drawn token whose own probability exceeds 1 - top_p (it is always kept).
    Redraw r of a row uses the stream key + r * salt. Rows still rejected after max_rounds (odds
    (1 - top_p) ** max_rounds) fall back to the sort.

    x: (B, V) logits after temperature; keys, counters: (B,) int64 -> (B,) int64.
    """
    probs = x.softmax(-1)  # (B, V)
    cdf = probs.cumsum(-1)
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    rows = None  # None = every row
    for r in range(max_rounds):
        p, c = (probs, cdf) if rows is None else (probs[rows], cdf[rows])
        k, n = (keys, counters) if rows is None else (keys[rows], counters[rows])
        u = counter_uniforms(k + as_int64(r * _RETRY_SALT), n)
        tok = torch.searchsorted(c, (u.to(c.dtype) * c[:, -1]).unsqueeze(1)).clamp_(max=x.shape[-1] - 1)
        pj = p.gather(1, tok)  # (b, 1)
        total = c[:, -1:]
        # the mass above a token is at most total - p_j: likely tokens pass without a vocabulary pass
        ok = (pj > (1 - top_p) * total).squeeze(1)
        if not bool(ok.all()):
            unsure = (~ok).nonzero().flatten()
            pu = p[unsure]
            above = torch.where(pu > pj[unsure], pu, 0.0).sum(-1)  # mass ranked above the drawn token
            ok[unsure] = above < top_p * total[unsure, 0]
        tok = tok.squeeze(1)
        if rows is None:
            if bool(ok.all()):
                return tok
            out.copy_(tok)
            rows = (~ok).nonzero().flatten()
        else:
            out[rows[ok]] = tok[ok]
            rows = rows[~ok]
        if rows.numel() == 0:
            return out
    if rows is None:
        rows = torch.arange(x.shape[0], device=x.device)
    u = counter_uniforms(keys[rows] + as_int64(max_rounds * _RETRY_SALT), counters[rows])
    out[rows] = _inverse_cdf(process_logits_top_p(x[rows], top_p).softmax(-1), u)
    return out


def _native_sampler():
    ext = native()
    return getattr(ext, "sample_rows_f32", None) if ext is not None else None


def sample_native(logits: torch.Tensor, temperature: float, top_p: float, keys: torch.Tensor,
                  counters: torch.Tensor, max_rounds: int = 8) -> torch.Tensor | None:
    """`sample_top_p` (or, at top_p 1, inverse-CDF sampling) of logits / temperature in
    reversalkit._C: the same draws, row by row without sorting or batch-wide temporaries. Rows whose
    nucleus draw is rejected max_rounds times take sample_top_p's sorting fallback here.

    logits: (B, V) float32 on the CPU; keys, counters: (B,) int64 -> (B,) int64, or None when the
    extension (or a CPU float32 input) is missing.
    """
    kernel = _native_sampler()
    if kernel is None or logits.device.type != "cpu" or logits.dtype != torch.float32 or logits.dim() != 2:
        return None
    B, V = logits.shape
    x = logits if logits.stride(1) == 1 else logits.contiguous()
    keys, counters = keys.contiguous(), counters.contiguous()
    out = torch.empty(B, dtype=torch.int64)
    kernel(x.data_ptr(), B, V, x.stride(0), float(temperature), float(top_p), keys.data_ptr(),
           counters.data_ptr(), max_rounds, out.data_ptr(), torch.get_num_threads())
    rows = (out < 0).nonzero().flatten()
    if rows.numel():
        u = counter_uniforms(keys[rows] + as_int64(max_rounds * _RETRY_SALT), counters[rows])
        out[rows] = _inverse_cdf(process_logits_top_p(x[rows] / temperature, top_p).softmax(-1), u)
    return out


class Sampler:
    """Picks the next token of every row; rows are independent of each other."""

    def __init__(self, params: SamplingParams, use_native: bool = True):
        self.params = params
        self.use_native = use_native  # False: the pure-torch path (the native one's test oracle)

    def __call__(self, logits: torch.Tensor, keys: torch.Tensor | None, counters: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """logits: (B, V); keys, counters: (B,) int64 (unused when greedy)
        -> tokens (B,) int64 and the model's log-probs of them (B,) or None."""
        p = self.params
        tokens = logits.argmax(-1) if p.greedy else self._draw(logits, keys, counters)
        logprobs = None
        if p.logprobs:
            lf = logits.float()
            logprobs = lf.gather(1, tokens[:, None]).squeeze(1) - lf.logsumexp(-1)
        return tokens, logprobs

    def _draw(self, logits: torch.Tensor, keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
        p = self.params
        if p.top_k == 0 and self.use_native:
            if logits.is_cuda and logits.stride(1) == 1:
                from reversalkit.engine import triton_sampling  # noqa: PLC0415
                from reversalkit.kernels import has_triton  # noqa: PLC0415

                if has_triton():
                    return triton_sampling.sample_top_p_triton(logits, p.temperature, p.top_p, keys, counters)
            tokens = sample_native(logits, p.temperature, p.top_p, keys, counters)
            if tokens is not None:
                return tokens
        if p.top_p < 1.0 and p.top_k == 0:
            return sample_top_p(logits.float() / p.temperature, p.top_p, keys, counters)
        return sample_from_logits(process_logits(logits, p), counter_uniforms(keys, counters))


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
