"""Temperature + top-p (nucleus) sampling of one token per row, with counter-based randomness.

    sample_top_p(logits (B, V), temperature, top_p, keys (B,), counters (B,), top_k=0) -> (B,) int64

Randomness never comes from a shared generator: draw r of row b uses the uniform
`counter_uniforms(keys[b] + r * RETRY_SALT, counters[b])` (splitmix64), so a row's token depends
only on its own key and counter, whatever else shares the batch.

Nucleus by rejection, without sorting the vocabulary: HF keeps a token when the probability mass
ranked above it is below top_p. Drawing from the full softmax(logits / T) by inverse CDF and
redrawing until the token is kept samples exactly the renormalised nucleus; a draw is kept with
probability >= top_p, so ~1 / top_p rounds on average, and a drawn token whose own probability
exceeds 1 - top_p is kept without another vocabulary pass. Rows still rejected after max_rounds
(odds (1 - top_p) ** max_rounds) take `_sort_fallback`, the sorted nucleus drawn with the stream
of round max_rounds; a full sort of 256 x 1078 costs ~6x a rejection round (measured), which is
why it is only the fallback.

Three paths compute the same draws; `sample_top_p` picks one per call (`backend=`):
- "triton": `_sample_top_p_fwd_kernel`, one program per row (CUDA; the CPU under TRITON_INTERPRET=1).
  The torch path's softmax, cumsum and per-round host synchronisations were about half of the
  sampler's host time on an H100 at batch 512 and a 128k vocabulary.
- "cpp": reversalkit._C.sample_rows_f32 (csrc/decode_step.cpp), float32 CPU logits, row by row
  without batch temporaries.
- "torch": `sample_top_p_reference`, any device; the only path for top_k > 0 (HF's warpers, then
  one inverse-CDF draw).
Tokens agree across paths except for draws within float rounding of a CDF step (their sums run in
another order).
"""

from __future__ import annotations

import torch

from reversalkit._ext import native

from ._backend import next_pow2, resolve_op_backend, tl, triton

_MASK64 = (1 << 64) - 1


def _signed(c: int) -> int:
    """A 64-bit constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


GOLDEN, M1, M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # splitmix64
RETRY_SALT = 0xD1B54A32D192ED03  # stream offset between rejection rounds


def as_int64(key: int) -> int:
    """An unsigned 64-bit key as the int64 with the same bits (how key tensors hold keys)."""
    return _signed(key & _MASK64)


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    return (x >> s) & ((1 << (64 - s)) - 1)  # logical shift of the int64 bit pattern


def counter_uniforms(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """Uniforms in (0, 1), one per (key, counter) pair: splitmix64 of key + counter * golden ratio.

    keys, counters: (B,) int64 (keys hold uint64 bit patterns; int64 arithmetic wraps like uint64)
    -> (B,) float64, never exactly 0 or 1. Runs on the tensors' device.
    """
    x = keys + counters * _signed(GOLDEN)
    x = (x ^ _shr(x, 30)) * _signed(M1)
    x = (x ^ _shr(x, 27)) * _signed(M2)
    x = x ^ _shr(x, 31)
    return (_shr(x, 11).double() + 0.5) * (2.0 ** -53)


def inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """weights: (B, V) unnormalised non-negative; uniforms: (B,) in (0, 1) -> (B,) int64 drawn index."""
    cdf = weights.cumsum(-1)
    target = (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(1)  # scale by the total: rounding-proof
    return torch.searchsorted(cdf, target).squeeze(1).clamp_(max=weights.shape[-1] - 1)


def nucleus_logits(x: torch.Tensor, top_p: float) -> torch.Tensor:
    """HF's TopPLogitsWarper: drop the least likely tokens whose total mass is <= 1 - top_p. (B, V)."""
    sorted_x, order = torch.sort(x, dim=-1)  # ascending, like HF
    cum = sorted_x.softmax(-1).cumsum(-1)
    remove = cum <= 1 - top_p
    remove[:, -1] = False  # always keep the most likely token
    return x.masked_fill(remove.scatter(1, order, remove), float("-inf"))


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, then top-k (0: off), then top-p, as HF's logits warpers apply them.

    logits: (B, V) -> float32 (B, V) with removed tokens at -inf (float64 stays float64).
    """
    x = (logits.double() if logits.dtype == torch.float64 else logits.float()) / temperature
    if top_k > 0:
        kth = torch.topk(x, min(top_k, x.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        x = nucleus_logits(x, top_p)
    return x


def _sort_fallback(logits, temperature, top_p, keys, counters, out, rounds):
    """In place: rows of out still -1 (rejected `rounds` times) get a draw from the sorted nucleus
    with the stream of round `rounds`. Every path's fallback; the host synchronises once here."""
    rejected = out < 0
    if not bool(rejected.any()):
        return out
    rows = rejected.nonzero().flatten()
    u = counter_uniforms(keys[rows] + as_int64(rounds * RETRY_SALT), counters[rows])
    x = nucleus_logits(logits[rows].float() / temperature, top_p)
    out[rows] = inverse_cdf(x.softmax(-1), u)
    return out


if triton is not None:

    @triton.jit
    def _sample_top_p_fwd_kernel(X, stride, V, temperature, top_p, KEYS, CTRS, OUT, max_rounds,
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


def _rows_triton(logits, temperature, top_p, keys, counters, rounds, block):
    """(B,) tokens, -1 for rows rejected `rounds` times. logits: (B, V), unit column stride."""
    B, V = logits.shape
    out = torch.empty(B, dtype=torch.int64, device=logits.device)
    if B:
        _sample_top_p_fwd_kernel[(B,)](logits, logits.stride(0), V, float(temperature), float(top_p), keys,
                                       counters, out, rounds, GOLDEN=GOLDEN, M1=M1, M2=M2, SALT=RETRY_SALT,
                                       BLOCK=min(block, next_pow2(V)))
    return out


def _rows_cpp(logits, temperature, top_p, keys, counters, rounds):
    """(B,) tokens, -1 for rejected rows, from reversalkit._C. logits: float32 CPU (B, V)."""
    x = logits if logits.stride(1) == 1 else logits.contiguous()
    out = torch.empty(x.shape[0], dtype=torch.int64)
    native().sample_rows_f32(x.numpy(), keys.numpy(), counters.numpy(), out.numpy(), float(temperature),
                             float(top_p), rounds, torch.get_num_threads())
    return out


def _rows_torch(logits, temperature, top_p, keys, counters, rounds):
    """(B,) tokens, -1 for rows rejected `rounds` times: the rejection rounds in batched torch ops."""
    x = logits.float() / temperature
    probs = x.softmax(-1)  # (B, V)
    if top_p >= 1.0:
        return inverse_cdf(probs, counter_uniforms(keys, counters))
    cdf = probs.cumsum(-1)
    out = torch.full((x.shape[0],), -1, dtype=torch.int64, device=x.device)
    rows = None  # None: every row (round 0 indexes nothing)
    for r in range(rounds):
        p, c = (probs, cdf) if rows is None else (probs[rows], cdf[rows])
        k, n = (keys, counters) if rows is None else (keys[rows], counters[rows])
        u = counter_uniforms(k + as_int64(r * RETRY_SALT), n)
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
            out[~ok] = -1
            rows = (~ok).nonzero().flatten()
        else:
            out[rows[ok]] = tok[ok]
            rows = rows[~ok]
        if rows.numel() == 0:
            break
    return out


def sample_top_p_reference(logits: torch.Tensor, temperature: float, top_p: float, keys: torch.Tensor,
                           counters: torch.Tensor, top_k: int = 0, max_rounds: int = 8) -> torch.Tensor:
    """The plain-torch path (the oracle of the other two): (B, V) logits, (B,) int64 keys and counters
    -> (B,) int64. top_k 0: rejection sampling of the nucleus; top_k > 0: HF's warpers, one draw."""
    if top_k > 0:
        return inverse_cdf(filter_logits(logits, temperature, top_k, top_p).softmax(-1),
                           counter_uniforms(keys, counters))
    out = _rows_torch(logits, temperature, top_p, keys, counters, max_rounds)
    return _sort_fallback(logits, temperature, top_p, keys, counters, out, max_rounds)


def sample_top_p(logits: torch.Tensor, temperature: float, top_p: float, keys: torch.Tensor,
                 counters: torch.Tensor, *, top_k: int = 0, max_rounds: int = 8, backend: str = "auto",
                 block: int = 4096) -> torch.Tensor:
    """One token per row of softmax(logits / temperature), restricted to the top-k (0: off), then the
    top-p nucleus, drawn with the uniforms of (keys, counters).

    logits: (B, V) any float dtype (rows may be strided); keys, counters: (B,) int64 on logits'
    device -> (B,) int64. backend: "auto" (Triton on CUDA, C++ for float32 on the CPU, torch
    otherwise) | "triton" | "cpp" | "torch". block: the Triton kernel's vocabulary tile.
    """
    if logits.dim() != 2 or keys.shape != (logits.shape[0],) or counters.shape != keys.shape:
        raise ValueError(f"sample_top_p: need logits (B, V) and keys, counters (B,), got shapes "
                         f"{tuple(logits.shape)}, {tuple(keys.shape)}, {tuple(counters.shape)}")
    if not (temperature > 0 and 0 < top_p <= 1):
        raise ValueError(f"sample_top_p: need temperature > 0 and 0 < top_p <= 1, got {temperature} and {top_p}")
    path = resolve_op_backend("sample_top_p", backend, (logits,), triton_fits=top_k == 0 and logits.stride(1) == 1,
                              cpp_entry="sample_rows_f32", cpp_fits=top_k == 0,
                              unfit=f"top_k={top_k} runs only on backend='torch'" if top_k else
                              f"logits need contiguous rows, got strides {logits.stride()}")
    if path == "torch":
        return sample_top_p_reference(logits, temperature, top_p, keys, counters, top_k, max_rounds)
    keys, counters = keys.contiguous(), counters.contiguous()
    rounds = max_rounds if top_p < 1.0 else 1
    if path == "triton":
        out = _rows_triton(logits, temperature, top_p, keys, counters, rounds, block)
    else:
        out = _rows_cpp(logits, temperature, top_p, keys, counters, rounds)
    return _sort_fallback(logits, temperature, top_p, keys, counters, out, rounds)
