"""One-shot GPU check of reversalkit's log-prob / DPO kernels: correctness, then speed beside naive and Liger.

    python -m benchmarks.gpu_kernels              # on a CUDA machine, from the repo root (< 4 min on an H100)
    python -m benchmarks.gpu_kernels --dry-run    # tiny shapes on CPU through Triton's interpreter

Needs no install: the kernels are loaded from ./kernels by path. Liger is used when importable, or
from a wheel under ./.whl (unpacked to a temp dir). Steps:
1. correctness: every Triton op (token_logprobs, linear_token_logprobs, sequence_logprobs, dpo_loss,
   linear_nll_loss, linear_dpo_loss) against a float64 reference on random inputs, odd shapes, fp32
   and bf16, forward and gradients; rule: kernel error <= 2x torch's own error in that dtype + half
   an ulp of the result's scale (see tests/test_kernels_logprob.py).
2. speed at N=16384, H=4096, V=128256 bf16: naive vs Liger vs reversalkit, fwd and fwd+bwd, with peak
   memory, plus the card's bf16 matmul rate measured in the same run.
3. a compact table last; JSON and markdown written to $OUT when set.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU (TRITON_INTERPRET=1)")
    ap.add_argument("--skip-correctness", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--diagnose", action="store_true", help="fp32 gradient error by variant (see diagnose)")
    return ap.parse_args(argv)


ARGS = parse_args()
if ARGS.dry_run:  # must precede the first triton import
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402


def load_kernels():
    """Import ./kernels as the package `rk_kernels` (relative imports inside keep working)."""
    init = ROOT / "kernels" / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        "rk_kernels", init, submodule_search_locations=[str(init.parent)]
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["rk_kernels"] = mod
    spec.loader.exec_module(mod)
    return mod


def load_liger():
    """(fused linear cross-entropy fn, LigerFusedLinearDPOLoss class) or (None, None)."""
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        wheels = sorted((ROOT / ".whl").glob("liger_kernel-*.whl"))
        if not wheels:
            return None, None
        import tempfile
        import zipfile

        dest = Path(tempfile.mkdtemp(prefix="liger_"))
        zipfile.ZipFile(wheels[-1]).extractall(dest)
        sys.path.insert(0, str(dest))
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except Exception as exc:  # a broken peer must not stop our own checks
        print(f"liger unavailable: {type(exc).__name__}: {exc}")
        return None, None
    return liger_fused_linear_cross_entropy, LigerFusedLinearDPOLoss


RK = load_kernels()
DEV = torch.device("cpu" if ARGS.dry_run else "cuda")
BACKEND = "triton"


# ----------------------------------------------------------------------------------------------- correctness


def max_err(x, ref):
    return (x.double() - ref.double()).abs().max().item() if x.numel() else 0.0


def within(name, kernel, native, ref, dtype, report):
    e_k, e_t = max_err(kernel, ref), max_err(native, ref)
    floor = 0.5 * torch.finfo(dtype).eps * (ref.abs().max().item() if ref.numel() else 0.0)
    ok = e_k <= 2 * e_t + floor
    report.append({"check": name, "kernel_err": e_k, "torch_err": e_t, "floor": floor, "ok": ok})


def with_grads(fn, tensors, grad_out=None):
    xs = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*xs)
    loss = out if grad_out is None else (out * grad_out.to(out.dtype)).sum()
    return (out, *torch.autograd.grad(loss, xs))


def targets_for(n, v, gen):
    t = torch.randint(0, v, (n,), generator=gen, device=DEV)
    return torch.where(torch.rand(n, generator=gen, device=DEV) < 0.2, -100, t)


def native_logp(logits, t):
    valid = t != -100
    return torch.log_softmax(logits, -1).gather(1, torch.where(valid, t, 0)[:, None]).squeeze(1) * valid


def check_token(n, v, dtype, report):
    gen = torch.Generator(DEV).manual_seed(n + v)
    logits = (3 * torch.randn(n, v, generator=gen, device=DEV)).to(dtype)
    t, g = targets_for(n, v, gen), torch.randn(n, generator=gen, device=DEV)
    ref = with_grads(lambda x: RK.token_logprobs_reference(x, t), [logits.double()], g.double())
    nat = with_grads(lambda x: native_logp(x, t), [logits], g)
    ker = with_grads(lambda x: RK.token_logprobs(x, t, backend=BACKEND), [logits], g)
    for what, k, a, r in zip(("logp", "grad_logits"), ker, nat, ref):
        within(f"token_logprobs {n}x{v} {dtype} {what}", k, a, r, dtype, report)


def check_linear(n, h, v, dtype, chunk, report):
    gen = torch.Generator(DEV).manual_seed(n + h + v)
    hid = torch.randn(n, h, generator=gen, device=DEV).to(dtype)
    w = (torch.randn(v, h, generator=gen, device=DEV) * 2 / h**0.5).to(dtype)
    t, g = targets_for(n, v, gen), torch.randn(n, generator=gen, device=DEV)
    ref = with_grads(
        lambda a, b: RK.linear_token_logprobs_reference(a, b, t), [hid.double(), w.double()], g.double()
    )
    nat = with_grads(lambda a, b: native_logp(a @ b.t(), t), [hid, w], g)
    ker = with_grads(
        lambda a, b: RK.linear_token_logprobs(a, b, t, chunk_size=chunk, backend=BACKEND), [hid, w], g
    )
    for what, k, a, r in zip(("logp", "grad_hidden", "grad_weight"), ker, nat, ref):
        within(f"linear_token_logprobs {n}x{h}x{v} chunk={chunk} {dtype} {what}", k, a, r, dtype, report)
    nll = lambda fn: lambda a, b: -fn(a, b).sum() / max(int((t != -100).sum()), 1)
    ref = with_grads(
        nll(lambda a, b: RK.linear_token_logprobs_reference(a, b, t)), [hid.double(), w.double()]
    )
    nat = with_grads(nll(lambda a, b: native_logp(a @ b.t(), t)), [hid, w])
    ker = with_grads(lambda a, b: RK.linear_nll_loss(a, b, t, chunk_size=chunk, backend=BACKEND), [hid, w])
    for what, k, a, r in zip(("grad_hidden", "grad_weight"), ker[1:], nat[1:], ref[1:]):
        within(f"linear_nll_loss {n}x{h}x{v} {dtype} {what}", k, a, r, dtype, report)


def dpo_batch(b, t, h, v, dtype, gen):
    hid = torch.randn(2 * b, t, h, generator=gen, device=DEV).to(dtype)
    w = (torch.randn(v, h, generator=gen, device=DEV) * 2 / h**0.5).to(dtype)
    ids = torch.randint(0, v, (2 * b, t), generator=gen, device=DEV)
    mask = torch.zeros(2 * b, t, dtype=torch.long, device=DEV)
    for i in range(2 * b):
        mask[i, 2 + i % 3 : t - i % 4] = 1
    rc = -5.0 * t + 5 * torch.randn(b, generator=gen, device=DEV)
    rr = -5.0 * t + 5 * torch.randn(b, generator=gen, device=DEV)
    return hid, w, ids, mask, rc, rr


def check_dpo(b, t, h, v, dtype, report):
    gen = torch.Generator(DEV).manual_seed(b + t + h + v)
    hid, w, ids, mask, rc, rr = dpo_batch(b, t, h, v, dtype, gen)

    def composed(fn_seq, fn_dpo):
        def run(a, c):
            sums, _ = fn_seq(a, c)
            return fn_dpo(sums[:b], sums[b:], rc.to(sums.dtype), rr.to(sums.dtype), beta=0.5)[0]

        return run

    ref = with_grads(
        composed(lambda a, c: RK.sequence_logprobs_reference(a, c, ids, mask), RK.dpo_loss_reference),
        [hid.double(), w.double()],
    )
    nat = with_grads(
        composed(lambda a, c: RK.sequence_logprobs_reference(a, c, ids, mask), RK.dpo_loss_reference),
        [hid, w],
    )
    ker = with_grads(
        composed(
            lambda a, c: RK.sequence_logprobs(a, c, ids, mask, backend=BACKEND),
            lambda *x, **k: RK.dpo_loss(*x, backend=BACKEND, **k),
        ),
        [hid, w],
    )
    fused = with_grads(
        lambda a, c: RK.linear_dpo_loss(a, c, ids, mask, rc, rr, beta=0.5, backend=BACKEND).loss, [hid, w]
    )
    for label, out in (("sequence_logprobs+dpo_loss", ker), ("linear_dpo_loss", fused)):
        for what, k, a, r in zip(("grad_hidden", "grad_weight"), out[1:], nat[1:], ref[1:]):
            within(f"{label} {2 * b}x{t}x{h}x{v} {dtype} {what}", k, a, r, dtype, report)
        rel = abs(out[0].item() - ref[0].item()) / max(1.0, abs(ref[0].item()))
        report.append(
            {
                "check": f"{label} {dtype} loss (rel err {rel:.2e} <= 1e-3)",
                "kernel_err": rel,
                "torch_err": max_err(nat[0], ref[0]),
                "floor": 0.0,
                "ok": rel <= 1e-3,
            }
        )
    for lt, eps in (("sigmoid", 0.1), ("ipo", 0.0), ("hinge", 0.0), ("robust", 0.2)):
        pc, pr = -40 + 8 * torch.randn(2, 257, generator=gen, device=DEV)
        refs = [
            pc + 4 * torch.randn(257, generator=gen, device=DEV),
            pr + 4 * torch.randn(257, generator=gen, device=DEV),
        ]
        args = [pc, pr, *refs]
        kw = dict(beta=0.5, loss_type=lt, label_smoothing=eps, reduction="none")
        gw = torch.randn(257, generator=gen, device=DEV)
        ref_fn = lambda *x, kw=kw: RK.dpo_loss_reference(*x, **kw)[0]
        r = with_grads(ref_fn, [a.double() for a in args], gw.double())
        n_ = with_grads(ref_fn, args, gw)
        k_ = with_grads(lambda *x, kw=kw: RK.dpo_loss(*x, backend=BACKEND, **kw)[0], args, gw)
        for what, k, a, rr_ in zip(("loss", "d_pc", "d_pr", "d_rc", "d_rr"), k_, n_, r):
            within(f"dpo_loss {lt} {what}", k, a, rr_, torch.float32, report)


def correctness(report):
    dtypes = [torch.float32, torch.bfloat16]
    tok = (
        [(1, 5), (7, 1000), (333, 32000)]
        if ARGS.dry_run
        else [(1, 5), (7, 1000), (333, 32000), (2048, 128256)]
    )
    lin = (
        [(1, 24, 5, None), (7, 48, 1000, 3), (33, 40, 3000, 8)]
        if ARGS.dry_run
        else [(1, 24, 5, None), (7, 48, 1000, 3), (333, 72, 32000, 64), (1031, 1000, 50257, 300)]
    )
    for dtype in dtypes:
        for n, v in tok:
            check_token(n, v, dtype, report)
        for n, h, v, c in lin:
            check_linear(n, h, v, dtype, c, report)
        check_dpo(3, 11, 40, 300, dtype, report) if ARGS.dry_run else check_dpo(
            8, 129, 200, 32000, dtype, report
        )


def diagnose():
    """Where fp32 gradient error comes from on this device: each variant's max error against the
    float64 reference, for the fused-linear NLL and the DPO composition (GEMM shapes and chunking
    vs the row kernels). Printed, and returned for the JSON."""
    out = []

    def errs(label, fn, tensors, ref):
        got = with_grads(fn, tensors)
        row = {"variant": label}
        for what, k, r in zip(("grad_hidden", "grad_weight"), got[1:], ref[1:]):
            row[what] = max_err(k, r)
        out.append(row)
        print(f"  {label:58s} grad_hidden {row['grad_hidden']:.3e}  grad_weight {row['grad_weight']:.3e}")

    gen = torch.Generator(DEV).manual_seed(5)
    n, h, v = (33, 40, 3000) if ARGS.dry_run else (1031, 1000, 50257)
    hid = torch.randn(n, h, generator=gen, device=DEV)
    w = torch.randn(v, h, generator=gen, device=DEV) * 2 / h**0.5
    t = targets_for(n, v, gen)
    nll = lambda fn: lambda a, b: -fn(a, b).sum() / max(int((t != -100).sum()), 1)
    print(f"diagnose: linear NLL fp32 {n}x{h}x{v}")
    ref = with_grads(
        nll(lambda a, b: RK.linear_token_logprobs_reference(a, b, t)), [hid.double(), w.double()]
    )
    errs("torch full logits", nll(lambda a, b: RK.linear_token_logprobs_reference(a, b, t)), [hid, w], ref)

    def torch_chunks(a, b, c=300):
        return torch.cat(
            [RK.linear_token_logprobs_reference(a[i : i + c], b, t[i : i + c]) for i in range(0, n, c)]
        )

    errs("torch full logits, 300-row chunks", nll(torch_chunks), [hid, w], ref)
    for be in ("triton", "torch"):
        for c in (300, None):
            errs(
                f"linear_nll_loss {be} chunk={c}",
                lambda a, b, be=be, c=c: RK.linear_nll_loss(a, b, t, chunk_size=c, backend=be),
                [hid, w],
                ref,
            )

    b_, t_, h_, v_ = (3, 11, 40, 300) if ARGS.dry_run else (8, 129, 200, 32000)
    print(f"diagnose: DPO fp32 {2 * b_}x{t_}x{h_}x{v_}")
    hid, w, ids, mask, rc, rr = dpo_batch(
        b_, t_, h_, v_, torch.float32, torch.Generator(DEV).manual_seed(b_ + t_ + h_ + v_)
    )

    def composed(seq):
        def run(a, c):
            sums, _ = seq(a, c)
            return RK.dpo_loss_reference(
                sums[:b_], sums[b_:], rc.to(sums.dtype), rr.to(sums.dtype), beta=0.5
            )[0]

        return run

    ref = with_grads(
        composed(lambda a, c: RK.sequence_logprobs_reference(a, c, ids, mask)), [hid.double(), w.double()]
    )
    errs(
        "torch full logits (all B*T rows)",
        composed(lambda a, c: RK.sequence_logprobs_reference(a, c, ids, mask)),
        [hid, w],
        ref,
    )
    shifted = sys.modules["rk_kernels.sequence"].shifted_rows

    def scored_only(a, c):
        rows, tg, si, counts = shifted(a, ids, mask)
        lp = RK.linear_token_logprobs_reference(rows, c, tg)
        return torch.zeros(2 * b_, dtype=lp.dtype, device=DEV).index_add(0, si, lp), None

    errs("torch, scored rows only", composed(scored_only), [hid, w], ref)
    for be in ("triton", "torch"):
        for gif in (False, True):
            errs(
                f"sequence_logprobs {be} grad_in_forward={gif}",
                composed(
                    lambda a, c, be=be, gif=gif: RK.sequence_logprobs(
                        a, c, ids, mask, backend=be, grad_in_forward=gif
                    )
                ),
                [hid, w],
                ref,
            )
        errs(
            f"linear_dpo_loss {be}",
            lambda a, c, be=be: RK.linear_dpo_loss(a, c, ids, mask, rc, rr, beta=0.5, backend=be).loss,
            [hid, w],
            ref,
        )
    return out


# ----------------------------------------------------------------------------------------------- speed


def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeat):
    fn()  # warmup (and Triton/cuBLAS autotuning)
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], times[0]


def peak_mem(fn):
    if DEV.type != "cuda":
        return None
    sync()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    sync()
    return torch.cuda.max_memory_allocated() - base


def matmul_rate(n, h, v, repeat):
    a = torch.randn(n, h, device=DEV, dtype=torch.bfloat16)
    b = torch.randn(v, h, device=DEV, dtype=torch.bfloat16)
    med, _ = timed(lambda: a @ b.t(), repeat)
    return 2 * n * h * v / med


def speed_cases(n, h, v, flce, liger_dpo):
    gen = torch.Generator(DEV).manual_seed(0)
    hid = torch.randn(n, h, generator=gen, device=DEV, dtype=torch.bfloat16)
    w = (torch.randn(v, h, generator=gen, device=DEV) / h**0.5).to(torch.bfloat16)
    t = torch.randint(0, v, (n,), generator=gen, device=DEV)
    hg, wg = hid.clone().requires_grad_(), w.clone().requires_grad_()

    def bwd(loss_fn):
        def run():
            hg.grad = wg.grad = None
            loss_fn(hg, wg).backward()

        return run

    naive = lambda a, b: -RK.linear_token_logprobs_reference(a, b, t).mean()
    cases = {
        ("nll fwd", "naive"): lambda: RK.linear_token_logprobs_reference(hid, w, t),
        ("nll fwd", "rk"): lambda: RK.linear_token_logprobs(hid, w, t),
        ("nll fwd+bwd", "naive"): bwd(naive),
        ("nll fwd+bwd", "rk"): bwd(lambda a, b: -RK.linear_token_logprobs(a, b, t).mean()),
        ("nll fwd+bwd", "rk-fused"): bwd(lambda a, b: RK.linear_nll_loss(a, b, t)),
    }
    if flce is not None:
        cases[("nll fwd", "liger")] = lambda: flce(hid, w, t, reduction="none")
        cases[("nll fwd+bwd", "liger")] = bwd(lambda a, b: flce(a, b, t, reduction="mean"))
    seq = 64 if ARGS.dry_run else 1024  # DPO: N tokens as N / seq sequences (chosen, rejected pairs)
    b = max(n // seq // 2, 1)
    ids = t[: 2 * b * seq].view(2 * b, seq)
    mask = torch.ones_like(ids)
    mask[:, 0] = 0
    rc = rr = torch.full((b,), -5.0 * seq, device=DEV)
    h3 = hg[: 2 * b * seq].detach().view(2 * b, seq, h)
    hd = h3.clone().requires_grad_()

    def dpo_bwd(loss_fn):
        def run():
            hd.grad = wg.grad = None
            loss_fn(hd, wg).backward()

        return run

    def naive_dpo(a, c):
        sums, _ = RK.sequence_logprobs_reference(a, c, ids, mask)
        return RK.dpo_loss_reference(sums[:b], sums[b:], rc, rr)[0]

    def rk_dpo(a, c):
        sums, _ = RK.sequence_logprobs(a, c, ids, mask)
        return RK.dpo_loss(sums[:b], sums[b:], rc, rr)[0]

    cases[("dpo fwd+bwd", "naive")] = dpo_bwd(naive_dpo)
    cases[("dpo fwd+bwd", "rk")] = dpo_bwd(rk_dpo)
    cases[("dpo fwd+bwd", "rk-fused")] = dpo_bwd(
        lambda a, c: RK.linear_dpo_loss(a, c, ids, mask, rc, rr).loss
    )

    def clear():  # peak memory is measured from a state without gradients, whatever ran before
        hg.grad = wg.grad = hd.grad = None

    cases[("clear", "")] = clear
    if liger_dpo is not None:
        lig = liger_dpo(beta=0.1, use_ref_model=False, compiled=False)
        tg = torch.where(mask[:, 1:].bool(), ids[:, 1:], -100)
        cases[("dpo fwd+bwd", "liger")] = dpo_bwd(lambda a, c: lig(c, a[:, :-1], tg)[0])
    return cases


def speed(rows, repeat, flce, liger_dpo):
    n, h, v = (256, 64, 1000) if ARGS.dry_run else (16384, 4096, 128256)
    rate = matmul_rate(n, h, v, repeat)
    print(f"bf16 matmul rate ({n}x{h} @ {h}x{v}): {rate / 1e12:.1f} TFLOP/s", flush=True)
    cases = speed_cases(n, h, v, flce, liger_dpo)
    clear = cases.pop(("clear", ""))
    for (case, prov), fn in cases.items():
        try:
            clear()
            mem = peak_mem(fn)
            med, best = timed(fn, repeat)
        except Exception as exc:  # OOM or a peer failure: record and continue
            print(f"{case} / {prov} failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            if DEV.type == "cuda":
                torch.cuda.empty_cache()
            continue
        gemms = 1 if case.endswith("fwd") else 3  # useful GEMMs of 2*N*H*V FLOPs each
        frac = gemms * 2 * n * h * v / med / rate
        rows.append(
            {
                "case": case,
                "provider": prov,
                "median_ms": med * 1e3,
                "min_ms": best * 1e3,
                "peak_mem_gib": None if mem is None else mem / 2**30,
                "useful_flops_frac_of_matmul": frac,
            }
        )
        print(
            f"{case:12s} {prov:9s} {med * 1e3:9.2f} ms  mem {rows[-1]['peak_mem_gib']}  "
            f"{frac:.0%} of matmul rate",
            flush=True,
        )
    return {"n": n, "h": h, "v": v, "matmul_tflops": rate / 1e12}


# ----------------------------------------------------------------------------------------------- report


def table(rows, meta):
    lines = [
        f"device: {meta['device']}; torch {meta['torch']}; triton {meta['triton']}; "
        f"shape N={meta.get('n')} H={meta.get('h')} V={meta.get('v')} bf16; "
        f"matmul {meta.get('matmul_tflops', 0):.1f} TFLOP/s",
        "| case | provider | median ms | min ms | peak mem GiB | vs naive | vs liger | % matmul rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["case"], r["provider"]): r for r in rows}
    for r in rows:
        naive, lig = by.get((r["case"], "naive")), by.get((r["case"], "liger"))
        vs = lambda o, r=r: f"{o['median_ms'] / r['median_ms']:.2f}x" if o else "-"
        mem = "-" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.2f}"
        lines.append(
            f"| {r['case']} | {r['provider']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | {mem} | "
            f"{vs(naive)} | {vs(lig)} | {r['useful_flops_frac_of_matmul']:.0%} |"
        )
    return "\n".join(lines)


def main():
    import triton

    meta = {
        "device": torch.cuda.get_device_name() if DEV.type == "cuda" else "cpu (TRITON_INTERPRET=1)",
        "torch": torch.__version__,
        "triton": triton.__version__,
    }
    flce, liger_dpo = load_liger()
    meta["liger"] = flce is not None
    t0 = time.perf_counter()
    report, rows = [], []
    if not ARGS.skip_correctness:
        correctness(report)
        bad = [r for r in report if not r["ok"]]
        print(
            f"correctness: {len(report) - len(bad)}/{len(report)} checks ok "
            f"({time.perf_counter() - t0:.0f} s)"
        )
        for r in bad:
            print(
                f"  FAIL {r['check']}: kernel {r['kernel_err']:.3g} vs torch {r['torch_err']:.3g} "
                f"(+{r['floor']:.2g})"
            )
    diag = None
    if ARGS.diagnose:
        try:
            diag = diagnose()
        except Exception as exc:  # noqa: BLE001 - diagnostics must not cost the other numbers
            print(f"diagnose failed: {type(exc).__name__}: {exc}")
    if not ARGS.skip_speed:
        meta.update(speed(rows, ARGS.repeat, flce, liger_dpo))
    meta["wall_s"] = time.perf_counter() - t0
    md = table(rows, meta)
    print(md)
    print(
        f"correctness {sum(r['ok'] for r in report)}/{len(report)} ok; "
        f"liger {'yes' if meta['liger'] else 'no'}; "
        f"wall {meta['wall_s']:.0f} s"
    )
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, "gpu_kernels.json").write_text(
            json.dumps({"meta": meta, "correctness": report, "speed": rows, "diagnose": diag}, indent=1)
        )
        Path(out, "gpu_kernels.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
