"""Temperature + nucleus (top-p) sampling on the GPU in one Triton program per row.

The torch form (`sampling.sample_top_p`) makes a full-vocabulary softmax and cumsum per step,
then runs its rejection rounds with a host synchronisation each (`.all()`, `.nonzero()`); on an
H100 at batch 512 and a 128k vocabulary that was about half of the sampler's host time. Here each
row's program does what `sample_native` does on the CPU, with the same counter-based uniforms:

1. one pass for the row's max and sum of exp((x - max) / T) (online, tile by tile);
2. per round r: the uniform of stream key + r * salt, an inverse-CDF search for its token (a
   running sum over tiles), and acceptance when the token's weight exceeds (1 - top_p) of the
   total or, failing that, when the weight ranked above it is below top_p of the total;
3. after max_rounds rejections the row gets -1, and `sample_top_p_triton` gives it
   `sample_top_p`'s sorting fallback (odds (1 - top_p) ** max_rounds per row).

Tokens equal the torch path's except for draws within float rounding of a CDF step: the sums run
in another order. The only host synchronisation is one check for fallback rows per call. Runs on
CUDA, and on the CPU under TRITON_INTERPRET=1 (tests). Triton is imported lazily.
"""

from __future__ import annotations

import functools

import torch

from reversalkit.engine.sampling import (
    _GOLDEN,
    _M1,
    _M2,
    _RETRY_SALT,
    _inverse_cdf,
    as_int64,
    counter_uniforms,
    process_logits_top_p,
)


def _u64(c: int) -> int:
    return c & ((1 << 64) - 1)


@functools.cache
def _kernel():
    import triton  # noqa: PLC0415
    import triton.language as tl  # noqa: PLC0415

    @triton.jit
    def top_p_kernel(X, stride, V, temperature, top_p, KEYS, CTRS, OUT, max_rounds,
                     GOLDEN: tl.constexpr, M1: tl.constexpr, M2: tl.constexpr, SALT: tl.constexpr,
                     BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        x_row = X + row * stride
        cols = tl.arange(0, BLOCK)
        # 1. max and sum of exp((x - max) / T), online over tiles
        m = tl.full((), float("-inf"), tl.float32)
        s = tl.zeros((), tl.float32)
        for start in range(0, V, BLOCK):
            ok = start + cols < V
            x = tl.load(x_row + start + cols, mask=ok, other=float("-inf")).to(tl.float32) / temperature
            m_new = tl.maximum(m, tl.max(x, axis=0))
            s = s * tl.exp(m - m_new) + tl.sum(tl.where(ok, tl.exp(x - m_new), 0.0), axis=0)
            m = m_new
        key = tl.load(KEYS + row).to(tl.uint64, bitcast=True)
        ctr = tl.load(CTRS + row).to(tl.uint64, bitcast=True)
        out = tl.full((), -1, tl.int64)
        r = 0
        while (r < max_rounds) & (out < 0):
            # the uniform of `counter_uniforms(key + r * salt, ctr)`: splitmix64, wrapping uint64
            z = key + r.to(tl.uint64) * SALT + ctr * GOLDEN
            z = (z ^ (z >> 30)) * M1
            z = (z ^ (z >> 27)) * M2
            z = z ^ (z >> 31)
            u = ((z >> 11).to(tl.float64) + 0.5) * 1.1102230246251565e-16  # 2 ** -53
            target = u.to(tl.float32) * s
            # 2. inverse CDF: the first token whose running weight reaches the target
            tok = tl.full((), V, tl.int64)
            run = tl.zeros((), tl.float32)
            for start in range(0, V, BLOCK):
                ok = start + cols < V
                x = tl.load(x_row + start + cols, mask=ok, other=float("-inf")).to(tl.float32) / temperature
                w = tl.where(ok, tl.exp(x - m), 0.0)
                cdf = run + tl.cumsum(w, axis=0)
                hit = tl.min(tl.where(ok & (cdf >= target), start + cols, V), axis=0).to(tl.int64)
                tok = tl.minimum(tok, hit)
                run += tl.sum(w, axis=0)
            tok = tl.minimum(tok, V - 1)
            w_tok = tl.exp(tl.load(x_row + tok).to(tl.float32) / temperature - m)
            # 3. keep it when the mass ranked above it is below top_p of the total
            keep = (top_p >= 1.0) | (w_tok > (1.0 - top_p) * s)
            if not keep:
                above = tl.zeros((), tl.float32)
                for start in range(0, V, BLOCK):
                    ok = start + cols < V
                    x = tl.load(x_row + start + cols, mask=ok, other=float("-inf")).to(tl.float32)
                    w = tl.where(ok, tl.exp(x / temperature - m), 0.0)
                    above += tl.sum(tl.where(w > w_tok, w, 0.0), axis=0)
                keep = above < top_p * s
            if keep:
                out = tok
            r += 1
        tl.store(OUT + row, out)

    return top_p_kernel


def sample_top_p_triton(logits: torch.Tensor, temperature: float, top_p: float, keys: torch.Tensor,
                        counters: torch.Tensor, max_rounds: int = 8, block: int = 4096) -> torch.Tensor:
    """Tokens (B,) int64 drawn from softmax(logits / temperature) restricted to the top-p nucleus.

    logits: (B, V) of any float dtype (rows may be strided); keys, counters: (B,) int64 on the same
    device. top_p = 1 draws from the whole distribution in one round.
    """
    if logits.dim() != 2 or logits.stride(1) != 1:
        raise ValueError(f"logits must be (B, V) with contiguous rows, got shape {tuple(logits.shape)} "
                         f"and strides {logits.stride()}")
    if not (temperature > 0 and 0 < top_p <= 1):
        raise ValueError(f"need temperature > 0 and 0 < top_p <= 1, got {temperature} and {top_p}")
    B, V = logits.shape
    out = torch.empty(B, dtype=torch.int64, device=logits.device)
    if B == 0:
        return out
    keys, counters = keys.contiguous(), counters.contiguous()
    rounds = max_rounds if top_p < 1.0 else 1
    bs = min(block, 1 << max(0, (V - 1).bit_length()))
    consts = dict(GOLDEN=_u64(_GOLDEN), M1=_u64(_M1), M2=_u64(_M2), SALT=_u64(_RETRY_SALT), BLOCK=bs)
    _kernel()[(B,)](logits, logits.stride(0), V, float(temperature), float(top_p), keys, counters, out,
                    rounds, **consts)
    rejected = out < 0
    if bool(rejected.any()):  # the call's one host synchronisation
        rows = rejected.nonzero().flatten()
        u = counter_uniforms(keys[rows] + as_int64(rounds * _RETRY_SALT), counters[rows])
        nucleus = process_logits_top_p(logits[rows].float() / temperature, top_p)
        out[rows] = _inverse_cdf(nucleus.softmax(-1), u)
    return out
