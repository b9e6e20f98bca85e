"""Benchmark: per-token log-probs from hidden states (and from logits), naive vs peers vs reversalkit.

    python -m benchmarks.bench_logprob            # N=4096, H=1024, V=32000 fp32 (the CPU targets)
    python -m benchmarks.bench_logprob --quick    # small shapes, a smoke run

Providers (CPU):
  naive          full (N, V) logits, fp32 log_softmax, gather (the baseline)
  liger          Liger's chunked_loss path, which is plain torch and runs on CPU: its fused linear GRPO
                 loss with beta=0, advantages 1 and the "dapo" token mean has exactly the NLL gradient,
                 so it does the same log-prob forward and backward (its Triton cross-entropy is GPU-only);
                 eager (compiled=False)
  liger-compiled the same with Liger's default compiled=True (torch.compile; the compiling first call
                 is excluded)
  trl            TRL's chunked log-prob autograd function (trl.kernels), plain torch on CPU
  rk             reversalkit linear_token_logprobs -> mean (per-token autograd, 4 GEMMs)
  rk-fused       reversalkit linear_nll_loss (gradients computed in the forward, 3 GEMMs)
Each provider runs in a fresh process: peak memory is the resident-set high-water mark of its first
call above the level after its inputs were built (freed heap pages of another provider cannot hide
an allocation), then the call is timed `--repeat` times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable

import torch

from benchmarks.harness import RESULTS_DIR, device_name, format_table, git_commit, peak_extra_memory, time_fn

SHAPES = {"full": dict(n=4096, h=1024, v=32000), "quick": dict(n=512, h=256, v=8000)}
SEQ_LEN = 512  # Liger's chunked losses take (B, T, H); N tokens are viewed as N / 512 sequences


def _inputs(n, h, v, grad, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=gen).requires_grad_(grad)
    weight = (torch.randn(v, h, generator=gen) / h**0.5).requires_grad_(grad)
    return hidden, weight, torch.randint(0, v, (n,), generator=gen)


def _liger_nll(hidden, weight, targets, compiled=False):
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    loss_fn = LigerFusedLinearGRPOLoss(beta=0.0, use_ref_model=False, loss_type="dapo", compiled=compiled)
    b = max(hidden.shape[0] // SEQ_LEN, 1)
    shape = (b, hidden.shape[0] // b)
    ones = torch.ones(shape)
    return lambda: loss_fn(hidden.view(*shape, -1), weight, targets.view(shape), ones, torch.ones(b))[0]


def _trl_logps(hidden, weight, targets):
    from trl.kernels import ChunkedLogProbFunction

    return lambda: ChunkedLogProbFunction.apply(
        hidden, weight, None, targets, 1.0, 32768, None, 1.0, ("log_probs",)
    )[0]


def linear_providers(shape: dict, backward: bool) -> dict[str, Callable[[], Callable[[], object]]]:
    """name -> builder() -> zero-argument call (built inside the worker process)."""
    from reversalkit.kernels import linear_nll_loss, linear_token_logprobs, linear_token_logprobs_reference

    def make(body):
        def build():
            hidden, weight, targets = _inputs(**shape, grad=backward)
            run = body(hidden, weight, targets)

            def call():
                hidden.grad = weight.grad = None
                out = run()
                if backward:
                    out.backward()
                return out

            return call

        return build

    mean = (lambda lp: -lp.mean()) if backward else (lambda lp: lp)
    providers = {
        "naive": make(lambda h, w, t: lambda: mean(linear_token_logprobs_reference(h, w, t))),
        "liger": make(lambda h, w, t: _liger_nll(h, w, t)),
        "trl": make(lambda h, w, t: (lambda f: lambda: mean(f()))(_trl_logps(h, w, t))),
        "rk": make(lambda h, w, t: lambda: mean(linear_token_logprobs(h, w, t))),
    }
    if backward:
        providers["liger-compiled"] = make(lambda h, w, t: _liger_nll(h, w, t, compiled=True))
        providers["rk-fused"] = make(lambda h, w, t: lambda: linear_nll_loss(h, w, t))
    return providers


def token_providers(shape: dict) -> dict[str, Callable[[], Callable[[], object]]]:
    from reversalkit.kernels import token_logprobs, token_logprobs_reference

    def make(op):
        def build():
            gen = torch.Generator().manual_seed(0)
            logits = torch.randn(shape["n"], shape["v"], generator=gen).requires_grad_()
            targets = torch.randint(0, shape["v"], (shape["n"],), generator=gen)

            def call():
                logits.grad = None
                op(logits, targets).sum().backward()

            return call

        return build

    return {"naive": make(token_logprobs_reference), "rk": make(token_logprobs)}


def cases(shape_name: str) -> dict[str, tuple[dict, Callable[[], dict]]]:
    shape = SHAPES[shape_name]
    return {
        "linear fwd": (shape, lambda: linear_providers(shape, backward=False)),
        "linear fwd+bwd": (shape, lambda: linear_providers(shape, backward=True)),
        "token_logprobs fwd+bwd": (shape, lambda: token_providers(shape)),
    }


def worker(case_table: dict, case: str, provider: str, repeat: int) -> dict:
    """Runs in a fresh process: memory of the first call, then `repeat` timed calls."""
    torch.manual_seed(0)
    _, providers = case_table[case]
    call = providers()[provider]()
    if provider.endswith("-compiled"):
        call()  # torch.compile's first call compiles (minutes on CPU): neither timed nor in the memory peak
    mem = peak_extra_memory(call)
    t = time_fn(call, warmup=0, repeat=repeat)
    return {
        "median_s": t.median_s,
        "min_s": t.min_s,
        "max_s": t.max_s,
        "repeats": t.repeats,
        "peak_mem_bytes": mem,
    }


def run_isolated(
    module: str,
    bench: str,
    case_table: dict,
    shape_name: str,
    repeat: int,
    only: list[str] | None,
    baseline: str = "naive",
    work_unit: str = "tok",
) -> list[dict]:
    """Every (case, provider) in its own `python -m module --worker` process; prints and saves the table."""
    meta = {"bench": bench, "device": device_name(), "commit": git_commit(), "shape": shape_name}
    rows = []
    for case, (shape, providers) in case_table.items():
        results = {}
        for name in providers():
            if only and name not in only:
                continue
            cmd = [
                sys.executable,
                "-m",
                module,
                "--worker",
                case,
                name,
                "--repeat",
                str(repeat),
                "--shape",
                shape_name,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            if proc.returncode != 0:
                print(f"[{bench}] {case} / {name} failed:\n{proc.stderr.strip()[-2000:]}")
                continue
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"[{bench}] {case} / {name}: {results[name]}", flush=True)
        base = results.get(baseline)
        for name, r in results.items():
            row = {
                **meta,
                "case": case,
                "provider": name,
                "is_baseline": name == baseline,
                **shape,
                **r,
                "work_unit": work_unit,
                "throughput": shape["n"] / r["median_s"],
            }
            if base:
                row["speedup"] = base["median_s"] / r["median_s"]
                if base["peak_mem_bytes"] and r["peak_mem_bytes"] is not None:
                    row["mem_ratio"] = r["peak_mem_bytes"] / base["peak_mem_bytes"]
            rows.append(row)
    print(
        format_table(
            bench,
            rows,
            f"[{meta['device']} @ {meta['commit']}, {shape_name}: {case_table_shape(case_table)}]",
        )
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_DIR / f"{bench}.jsonl", "a") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return rows


def case_table_shape(case_table: dict) -> str:
    shape = next(iter(case_table.values()))[0]
    return " ".join(f"{k}={v}" for k, v in shape.items())


def check_targets(
    rows: list[dict], case: str, ours: str, mem_max: float, time_max: float, peer: str, peer_max: float
) -> None:
    """Print the issue's CPU targets for one case: memory and time vs naive, time vs the peer."""
    by = {r["provider"]: r for r in rows if r["case"] == case}
    if ours not in by or "naive" not in by:
        return
    r, n = by[ours], by["naive"]
    mem = r["peak_mem_bytes"] / n["peak_mem_bytes"] if n["peak_mem_bytes"] else float("nan")
    t_naive = r["median_s"] / n["median_s"]
    line = (
        f"targets [{case} / {ours}]: memory {mem:.2f}x naive (<= {mem_max}) "
        f"{'ok' if mem <= mem_max else 'MISSED'}; time {t_naive:.2f}x naive (<= {time_max}) "
        f"{'ok' if t_naive <= time_max else 'MISSED'}"
    )
    if peer in by:
        t_peer = r["median_s"] / by[peer]["median_s"]
        line += f"; time {t_peer:.2f}x {peer} (<= {peer_max}) {'ok' if t_peer <= peer_max else 'MISSED'}"
    print(line)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes")
    ap.add_argument("--repeat", type=int, default=None, help="timed calls per provider (default 3, quick 5)")
    ap.add_argument("--providers", nargs="*", help="run only these providers")
    ap.add_argument("--worker", nargs=2, metavar=("CASE", "PROVIDER"), help=argparse.SUPPRESS)
    ap.add_argument("--shape", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    shape_name = args.shape or ("quick" if args.quick else "full")
    table = cases(shape_name)
    repeat = args.repeat or (5 if shape_name == "quick" else 3)
    if args.worker:
        print(json.dumps(worker(table, *args.worker, repeat)))
        return
    rows = run_isolated("benchmarks.bench_logprob", "logprob", table, shape_name, repeat, args.providers)
    for ours in ("rk", "rk-fused"):
        for peer in ("liger", "liger-compiled"):
            check_targets(rows, "linear fwd+bwd", ours, 0.25, 1.0, peer, 0.7)


if __name__ == "__main__":
    main()
