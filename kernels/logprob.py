"""Per-token log-probabilities from logits: log p(target) = logit[target] - logsumexp(logits).

    token_logprobs(logits (N, V), targets (N,), ignore_index=-100) -> (N,) float32

Triton: one program per row streams the row in vocab tiles with an online log-sum-exp (fp32
whatever the input dtype); the backward writes grad = g * (onehot - softmax), optionally in place
over the logits it reads. The same two row kernels (and their torch mirrors) serve the fused
linear path in `linear_logprob.py`, which hands them one chunk of logits at a time.
CPU: the same math in plain torch, in blocks of rows small enough that every temporary (including
the fp64 ones of the x - lse subtraction) stays in cache.
Ignored rows (target == ignore_index) give 0 and receive no gradient.
"""

from __future__ import annotations

import torch

from ._backend import kernel_exp, kernel_log, precise_math, resolve_backend, tl, triton
from ._checks import check_rows, check_target_range

if triton is not None:

    @triton.jit
    def _logprob_fwd_kernel(
        logits_ptr,
        stride_row,
        targets_ptr,
        logp_ptr,
        lse_ptr,
        V,
        ignore_index,
        BLOCK_V: tl.constexpr,
        PRECISE: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + row * stride_row
        target = tl.load(targets_ptr + row).to(tl.int64)
        m = tl.full([], float("-inf"), tl.float32)
        s = tl.zeros([], tl.float32)
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            x = tl.load(base + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, axis=0))
            # A row (prefix) of -inf logits keeps m_new = -inf; the guards keep exp(-inf - -inf) out.
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            s = s * kernel_exp(m - m_safe, PRECISE) + tl.sum(kernel_exp(x - m_safe, PRECISE), axis=0)
            m = m_new
        # lse is kept in fp64: rounding m + log(s) to fp32 would shift every exp(x - lse) by up to an
        # ulp of |lse|, a larger error than torch's (x - m) - log(s) on the likeliest tokens.
        lse = m.to(tl.float64) + kernel_log(s, PRECISE).to(tl.float64)
        valid = target != ignore_index
        x_t = tl.load(base + tl.where(valid, target, 0)).to(tl.float64)
        tl.store(logp_ptr + row, tl.where(valid, x_t - lse, 0.0).to(tl.float32))
        tl.store(lse_ptr + row, lse)

    @triton.jit
    def _logprob_bwd_kernel(
        logits_ptr,
        stride_row,
        out_ptr,
        stride_out,
        targets_ptr,
        lse_ptr,
        grad_ptr,
        W,
        col_offset,
        ignore_index,
        BLOCK_V: tl.constexpr,
        PRECISE: tl.constexpr,
    ):
        # Columns [col_offset, col_offset + W) of the vocabulary; out may alias logits (in place).
        row = tl.program_id(0).to(tl.int64)
        target = tl.load(targets_ptr + row).to(tl.int64)
        lse = tl.load(lse_ptr + row)
        g = tl.load(grad_ptr + row).to(tl.float32)
        g = tl.where(target != ignore_index, g, 0.0)
        local_t = target - col_offset
        for start in range(0, W, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            x = tl.load(logits_ptr + row * stride_row + cols, mask=cols < W, other=0.0)
            p = kernel_exp((x.to(tl.float64) - lse).to(tl.float32), PRECISE)
            grad = tl.where(cols == local_t, g - g * p, -g * p)
            tl.store(out_ptr + row * stride_out + cols, grad.to(out_ptr.dtype.element_ty), mask=cols < W)


def _block_v(width: int, on_cuda: bool) -> int:
    # CUDA: 4096-wide tiles keep registers in check at 8 warps; the interpreter runs numpy per tile,
    # so fewer, wider tiles are much faster there.
    return min(triton.next_power_of_2(max(width, 1)), 4096 if on_cuda else 32768)


def _rows_forward_triton(logits, targets, ignore_index):
    n, v = logits.shape
    logp = torch.empty(n, dtype=torch.float32, device=logits.device)
    lse = torch.empty(n, dtype=torch.float64, device=logits.device)
    if n:
        _logprob_fwd_kernel[(n,)](
            logits,
            logits.stride(0),
            targets,
            logp,
            lse,
            v,
            ignore_index,
            BLOCK_V=_block_v(v, logits.is_cuda),
            PRECISE=precise_math(logits),
            num_warps=8,
        )
    return logp, lse


# Row blocks of the torch row kernels hold this many bytes of fp32 logits. CPU torch runs a mixed
# fp32/fp64 elementwise op (x - lse) through fp64 copies of operand and result, about 5x the
# block's fp32 bytes; 1 MiB blocks keep those and the other temporaries in cache. Measured at
# (512, 32000): 0.18 s and no extra memory, against 1.15 s and 314 MiB for the chunk in one piece.
ROW_BLOCK_BYTES = 2**20


def _block_rows(n: int, width: int) -> int:
    return max(1, min(n, ROW_BLOCK_BYTES // (4 * max(width, 1))))


def _rows_forward_torch(logits, targets, ignore_index):
    n, v = logits.shape
    logp = torch.empty(n, dtype=torch.float32, device=logits.device)
    lse = torch.empty(n, dtype=torch.float64, device=logits.device)
    step = _block_rows(n, v)
    for s in range(0, n, step):
        x = logits[s : s + step].float()  # (c, V): a view when already fp32
        m = x.amax(dim=1, keepdim=True)
        m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
        lse[s : s + step] = m.squeeze(1).double() + torch.log(torch.exp(x - m).sum(dim=1)).double()
        t = targets[s : s + step]
        valid = t != ignore_index
        x_t = x.gather(1, torch.where(valid, t, 0).unsqueeze(1)).squeeze(1).double()
        logp[s : s + step] = torch.where(valid, x_t - lse[s : s + step], 0.0).float()
    return logp, lse


def rows_forward_consuming(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int):
    """Torch forward for a chunk whose logits are not needed afterwards: (logp, lse, sumexp), all (c,).

    Overwrites fp32/fp64 `logits` with exp(logits - rowmax) (5 passes, no temporaries, against 7 and a
    (c, V) temporary for logsumexp + a later exp); `grad_from_exp_` turns that into the gradient.
    """
    valid = targets != ignore_index
    x_t = logits.gather(1, torch.where(valid, targets, 0).unsqueeze(1)).squeeze(1).float()
    m = logits.amax(dim=1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)  # all -inf row: exp gives 0, lse = -inf
    s = logits.sub_(m).exp_().sum(dim=1)
    lse = m.squeeze(1).double() + torch.log(s).double()  # fp64: see _logprob_fwd_kernel
    return torch.where(valid, x_t.double() - lse, 0.0).float(), lse, s


def grad_from_exp_(
    p: torch.Tensor, targets: torch.Tensor, sumexp: torch.Tensor, grad: torch.Tensor, ignore_index: int
) -> torch.Tensor:
    """In place: p = exp(logits - rowmax) (from `rows_forward_consuming`) -> g * (onehot - softmax)."""
    valid = targets != ignore_index
    g = torch.where(valid, grad.to(p.dtype), 0.0)
    p.mul_((-g / sumexp).unsqueeze(1))
    rows = valid.nonzero().squeeze(1)
    p[rows, targets[rows]] += g[rows]
    return p


def logprob_rows_forward(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp (N,) fp32, lse (N,) fp64) for row-major (N, V) logits (unit column stride); backend resolved."""
    if backend == "triton":
        return _rows_forward_triton(logits, targets, ignore_index)
    return _rows_forward_torch(logits, targets, ignore_index)


def _rows_backward_torch(logits, targets, lse, grad, ignore_index, out, col_offset):
    n, w = logits.shape
    g = torch.where(targets != ignore_index, grad.float(), 0.0)  # (N,)
    local = targets - col_offset
    step = _block_rows(n, w)
    for s in range(0, n, step):
        o = out[s : s + step]
        x = logits[s : s + step].float()  # a view when logits are fp32
        # torch.sub(..., out=o) is safe when o aliases x: each element is read before it is written;
        # with fp64 lse the difference is formed in fp64 and rounded once (its fp64 temporaries are
        # one row block's: see ROW_BLOCK_BYTES).
        d = lse[s : s + step, None]
        p = torch.sub(x, d, out=o) if o.dtype == torch.float32 else (x - d).float()
        p = p.exp_().mul_(-g[s : s + step, None])  # (c, W): -g * softmax
        hit = ((local[s : s + step] >= 0) & (local[s : s + step] < w)).nonzero().squeeze(1)
        p[hit, local[s : s + step][hit]] += g[s : s + step][hit]
        if p is not o:
            o.copy_(p)
    return out


def logprob_rows_backward(
    logits: torch.Tensor,
    targets: torch.Tensor,
    lse: torch.Tensor,
    grad: torch.Tensor,
    ignore_index: int,
    backend: str,
    *,
    out: torch.Tensor | None = None,
    col_offset: int = 0,
) -> torch.Tensor:
    """d logp / d logits scaled by grad: g * (onehot(target) - exp(logits - lse)), for a tile of columns.

    logits: (N, W) columns [col_offset, col_offset + W) of the vocabulary; lse (N,) fp64, grad (N,).
    out: (N, W) destination, may be `logits` itself (in place); a new tensor of logits' dtype if None.
    """
    if out is None:
        out = torch.empty_like(logits)
    n, w = logits.shape
    if n == 0:
        return out
    if backend == "triton":
        _logprob_bwd_kernel[(n,)](
            logits,
            logits.stride(0),
            out,
            out.stride(0),
            targets,
            lse,
            grad,
            w,
            col_offset,
            ignore_index,
            BLOCK_V=_block_v(w, logits.is_cuda),
            PRECISE=precise_math(logits),
            num_warps=8,
        )
        return out
    return _rows_backward_torch(logits, targets, lse, grad, ignore_index, out, col_offset)


class TokenLogprobsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, ignore_index, backend):
        logp, lse = logprob_rows_forward(logits, targets, ignore_index, backend)
        ctx.save_for_backward(logits, targets, lse)
        ctx.ignore_index, ctx.backend = ignore_index, backend
        return logp

    @staticmethod
    def backward(ctx, grad_logp):
        logits, targets, lse = ctx.saved_tensors
        grad = logprob_rows_backward(
            logits, targets, lse, grad_logp.contiguous(), ctx.ignore_index, ctx.backend
        )
        return grad, None, None, None


def token_logprobs_reference(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Plain torch: fp32 (or fp64) log_softmax over the full (N, V) logits, then gather. (N,) float32+."""
    x = logits.double() if logits.dtype == torch.float64 else logits.float()
    valid = targets != ignore_index
    logp = torch.log_softmax(x, dim=-1).gather(1, torch.where(valid, targets, 0).unsqueeze(1)).squeeze(1)
    return torch.where(valid, logp, torch.zeros((), dtype=logp.dtype, device=logp.device))


def token_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100, *, backend: str = "auto"
) -> torch.Tensor:
    """log p(target) per row of (N, V) logits -> (N,) float32, differentiable w.r.t. logits.

    Rows whose target equals `ignore_index` give 0 and receive zero gradient. `backend`: see
    `reversalkit.kernels._backend` ("auto" = Triton on CUDA, chunked torch on CPU).
    """
    check_rows("logits", logits, targets)
    check_target_range(targets, logits.shape[1], ignore_index)
    path = resolve_backend(backend, logits)
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    return TokenLogprobsFunction.apply(logits, targets.contiguous(), ignore_index, path)
