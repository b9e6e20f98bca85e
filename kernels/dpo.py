"""DPO-family preference losses on per-sequence log-probs.

    dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *,
             beta=0.1, loss_type="sigmoid", label_smoothing=0.0, reduction="mean")
        -> (loss, chosen_rewards (B,), rejected_rewards (B,))

With the margin m = (pi_c - ref_c) - (pi_r - ref_r) and z = beta * m, eps = label_smoothing:
    sigmoid  -(1 - eps) log s(z) - eps log s(-z)           (DPO; eps > 0 is conservative DPO)
    robust   (-(1 - eps) log s(z) + eps log s(-z)) / (1 - 2 eps)    (rDPO, unbiased under label noise)
    hinge    max(0, 1 - z)                                   (SLiC)
    ipo      (m - 1 / (2 beta))^2                            (IPO; pass length-normalised log-probs,
                                                             e.g. the `mean` of `sequence_logprobs`)
Rewards are beta * (pi - ref), detached. The NLL term of the chosen completion (RPO) belongs to the
training step, which owns the token counts; `fused_loss.linear_dpo_loss` offers it fused.

Triton: one elementwise kernel writes each pair's loss and dloss/dm; backward scales dloss/dm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._backend import kernel_exp, libdevice, precise_math, resolve_backend, tl, triton
from ._checks import LOSS_TYPES, check_dpo_args

_LOSS_CODES = {name: i for i, name in enumerate(LOSS_TYPES)}

if triton is not None:

    @triton.jit
    def _log_sigmoid(z, PRECISE: tl.constexpr):
        # log s(z) = min(z, 0) - log1p(exp(-|z|)).
        if PRECISE:
            return tl.minimum(z, 0.0) - libdevice.log1p(libdevice.exp(-tl.abs(z)))
        else:
            # log1p(e) = log(u) * e / (u - 1) with u = 1 + e is accurate to a few ulps (the rounding
            # of u cancels between log(u) and u - 1); plain log(1 + e) loses up to eps / e relative.
            e = tl.exp(-tl.abs(z))
            u = 1.0 + e
            return tl.minimum(z, 0.0) - tl.where(u == 1.0, e, tl.log(u) * (e / (u - 1.0)))

    @triton.jit
    def _dpo_fwd_kernel(
        pc_ptr,
        pr_ptr,
        rc_ptr,
        rr_ptr,
        loss_ptr,
        dldm_ptr,
        B,
        beta,
        eps,
        LOSS: tl.constexpr,
        BLOCK: tl.constexpr,
        PRECISE: tl.constexpr,
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < B
        pc = tl.load(pc_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        pr = tl.load(pr_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        rc = tl.load(rc_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        rr = tl.load(rr_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        m = (pc - rc) - (pr - rr)
        z = beta * m
        ls_pos = _log_sigmoid(z, PRECISE)
        ls_neg = _log_sigmoid(-z, PRECISE)
        if LOSS == 0:  # sigmoid
            loss = -(1.0 - eps) * ls_pos - eps * ls_neg
            dldm = beta * (-(1.0 - eps) * kernel_exp(ls_neg, PRECISE) + eps * kernel_exp(ls_pos, PRECISE))
        elif LOSS == 1:  # ipo
            d = m - 1.0 / (2.0 * beta)
            loss = d * d
            dldm = 2.0 * d
        elif LOSS == 2:  # hinge
            loss = tl.maximum(1.0 - z, 0.0)
            dldm = tl.where(z < 1.0, -beta, 0.0)
        else:  # robust
            loss = (-(1.0 - eps) * ls_pos + eps * ls_neg) / (1.0 - 2.0 * eps)
            dldm = (
                beta
                * (-(1.0 - eps) * kernel_exp(ls_neg, PRECISE) - eps * kernel_exp(ls_pos, PRECISE))
                / (1.0 - 2.0 * eps)
            )
        tl.store(loss_ptr + offs, loss, mask=mask)
        tl.store(dldm_ptr + offs, dldm, mask=mask)


def _dpo_forward_triton(pc, pr, rc, rr, beta, loss_type, eps):
    b = pc.shape[0]
    loss = torch.empty(b, dtype=torch.float32, device=pc.device)
    dldm = torch.empty(b, dtype=torch.float32, device=pc.device)
    if b:
        block = min(1024, triton.next_power_of_2(b))
        _dpo_fwd_kernel[(triton.cdiv(b, block),)](
            pc,
            pr,
            rc,
            rr,
            loss,
            dldm,
            b,
            float(beta),
            float(eps),
            LOSS=_LOSS_CODES[loss_type],
            BLOCK=block,
            PRECISE=precise_math(loss),
        )
    return loss, dldm


def _dpo_forward_torch(pc, pr, rc, rr, beta, loss_type, eps):
    m = (pc.float() - rc.float()) - (pr.float() - rr.float())  # (B,)
    z = beta * m
    if loss_type == "ipo":
        d = m - 1.0 / (2.0 * beta)
        return d * d, 2.0 * d
    if loss_type == "hinge":
        return torch.relu(1.0 - z), torch.where(z < 1.0, -beta, 0.0)
    s_pos, s_neg = torch.sigmoid(z), torch.sigmoid(-z)
    if loss_type == "sigmoid":
        return (
            -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z),
            beta * (-(1 - eps) * s_neg + eps * s_pos),
        )
    scale = 1.0 / (1.0 - 2.0 * eps)
    return (
        scale * (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)),
        scale * beta * (-(1 - eps) * s_neg - eps * s_pos),
    )


def dpo_forward(pc, pr, rc, rr, beta, loss_type, eps, backend):
    """Per-pair (loss (B,), dloss/dmargin (B,)) in fp32; backend already resolved."""
    if backend == "triton":
        return _dpo_forward_triton(
            pc.contiguous(), pr.contiguous(), rc.contiguous(), rr.contiguous(), beta, loss_type, eps
        )
    return _dpo_forward_torch(pc, pr, rc, rr, beta, loss_type, eps)


class DPOLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pc, pr, rc, rr, beta, loss_type, eps, backend):
        loss, dldm = dpo_forward(pc, pr, rc, rr, beta, loss_type, eps, backend)
        ctx.save_for_backward(dldm)
        ctx.dtypes = (pc.dtype, pr.dtype, rc.dtype, rr.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        (dldm,) = ctx.saved_tensors
        g = grad_loss.float() * dldm  # d/dm; m = pc - rc - pr + rr
        signs = (1.0, -1.0, -1.0, 1.0)
        grads = [
            (s * g).to(dt) if need else None
            for s, dt, need in zip(signs, ctx.dtypes, ctx.needs_input_grad[:4])
        ]
        return (*grads, None, None, None, None)


def _check(pc, pr, rc, rr, beta, loss_type, eps, reduction):
    tensors = {"policy_rejected_logps": pr, "ref_chosen_logps": rc, "ref_rejected_logps": rr}
    check_dpo_args(pc.shape, tensors, beta, loss_type, eps, reduction)


def _reduce(loss, reduction):
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, chosen_rewards (B,), rejected_rewards (B,)); loss is the mean over pairs by default.

    All four inputs are (B,) sequence log-probs (summed over completion tokens; length-normalised
    for "ipo"). Gradients flow to every input that requires them.
    """
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    _check(*logps, beta, loss_type, label_smoothing, reduction)
    path = resolve_backend(backend, policy_chosen_logps)
    loss = DPOLossFunction.apply(*logps, float(beta), loss_type, float(label_smoothing), path)
    chosen_rewards = beta * (policy_chosen_logps.detach().float() - ref_chosen_logps.detach().float())
    rejected_rewards = beta * (policy_rejected_logps.detach().float() - ref_rejected_logps.detach().float())
    return _reduce(loss, reduction), chosen_rewards, rejected_rewards


def dpo_loss_reference(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    beta=0.1,
    loss_type="sigmoid",
    label_smoothing=0.0,
    reduction="mean",
):
    """Plain-torch autograd formulas, in the inputs' dtype (fp64 in, fp64 out): the test oracle."""
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    _check(*logps, beta, loss_type, label_smoothing, reduction)
    eps = label_smoothing
    m = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    if loss_type == "sigmoid":
        loss = -(1 - eps) * F.logsigmoid(beta * m) - eps * F.logsigmoid(-beta * m)
    elif loss_type == "robust":
        loss = (-(1 - eps) * F.logsigmoid(beta * m) + eps * F.logsigmoid(-beta * m)) / (1 - 2 * eps)
    elif loss_type == "hinge":
        loss = torch.relu(1 - beta * m)
    else:
        loss = (m - 1 / (2 * beta)) ** 2
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    return _reduce(loss, reduction), chosen_rewards, rejected_rewards
