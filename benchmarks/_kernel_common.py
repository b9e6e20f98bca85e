"""Runner shared by the kernel benchmarks (bench_logprob, bench_dpo): a process per provider, timed
calls alternating between providers.

A benchmark module gives `cases(shape_name) -> {case: (shape, providers)}`, where `providers()`
returns {name: builder} and `builder()` builds inputs and returns the zero-argument call to time
(see `builders`), then calls `bench_main`. For each case every provider gets its own
`python -m <module> --worker CASE PROVIDER` process, so that the peak memory of its first call
(the resident-set high-water mark above the level once its inputs exist) is not hidden by heap
pages another provider freed. The workers then stay up and run one timed call per request, and
the parent asks them in turn, round after round: on a shared, unevenly loaded machine every
provider sees the same load, so the ratios stay fair even when the absolute times drift.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable

import torch

from benchmarks.harness import RESULTS_DIR, device_name, format_table, git_commit, peak_extra_memory, time_fn

_TAG = "@@bench "  # prefix of protocol lines on a worker's stdout (a library may print there too)


def builders(make_inputs: Callable[[], tuple], bodies: dict, backward: bool) -> dict:
    """{name: builder() -> call} from bodies {name: body(*inputs) -> run}; call() = run() (+ backward).

    Inputs are made inside the worker; tensors among them get their .grad cleared before each call.
    """

    def build(body):
        def builder():
            inputs = make_inputs()
            run = body(*inputs)

            def call():
                for t in inputs:
                    if isinstance(t, torch.Tensor):
                        t.grad = None
                out = run()
                if backward:
                    out.backward()
                return out

            return call

        return builder

    return {name: build(body) for name, body in bodies.items()}


def _send(obj: dict) -> None:
    print(_TAG + json.dumps(obj), flush=True)


def serve(case_table: dict, case: str, provider: str) -> None:
    """Worker: report the first call's peak memory, then time one call per 'time' line on stdin."""
    torch.manual_seed(0)
    _, providers = case_table[case]
    call = providers()[provider]()
    if provider.endswith("-compiled"):
        call()  # torch.compile's first call compiles (minutes on CPU): neither timed nor in the memory peak
    _send({"peak_mem_bytes": peak_extra_memory(call)})
    for line in sys.stdin:
        if line.strip() != "time":
            break
        _send({"s": time_fn(call, warmup=0, repeat=1).median_s})


class _Worker:
    def __init__(self, module: str, case: str, provider: str, shape_name: str):
        cmd = [sys.executable, "-m", module, "--worker", case, provider, "--shape", shape_name]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )

    def receive(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(_TAG):
                return json.loads(line[len(_TAG) :])
        self.proc.wait()
        raise RuntimeError(self.proc.stderr.read().strip()[-2000:] or f"exit status {self.proc.returncode}")

    def time_once(self) -> float:
        self.proc.stdin.write("time\n")
        self.proc.stdin.flush()
        return self.receive()["s"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def _measure_case(module: str, bench: str, case: str, names: list[str], shape_name: str, repeat: int) -> dict:
    """{provider: {median_s, min_s, max_s, repeats, peak_mem_bytes}}; a provider that fails is reported
    and left out."""
    workers, results = {}, {}
    try:
        for name in names:  # started one at a time: a compiling or allocating start disturbs no timing
            w = _Worker(module, case, name, shape_name)
            try:
                results[name] = {**w.receive(), "times": []}
                workers[name] = w
            except RuntimeError as exc:
                print(f"[{bench}] {case} / {name} failed:\n{exc}")
                w.close()
        names = list(workers)
        for r in range(repeat):
            k = r % max(len(names), 1)  # each round starts with another provider
            for name in names[k:] + names[:k]:
                results[name]["times"].append(workers[name].time_once())
    finally:
        for w in workers.values():
            w.close()
    out = {}
    for name, res in results.items():
        times = res.pop("times")
        if times:
            out[name] = {
                "median_s": statistics.median(times),
                "min_s": min(times),
                "max_s": max(times),
                "repeats": len(times),
                **res,
            }
            print(f"[{bench}] {case} / {name}: {out[name]}", flush=True)
    return out


def _rows(meta: dict, case: str, shape: dict, results: dict, baseline: str, work_unit: str) -> list[dict]:
    base = results.get(baseline)
    rows = []
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
    return rows


def run_alternating(
    module: str,
    bench: str,
    case_table: dict,
    shape_name: str,
    repeat: int,
    only_providers: list[str] | None = None,
    only_cases: list[str] | None = None,
    baseline: str = "naive",
    work_unit: str = "tok",
) -> list[dict]:
    """Every case's providers in their own worker processes, timed in turn; prints and saves the table."""
    meta = {
        "bench": bench,
        "device": device_name(),
        "commit": git_commit(),
        "shape": shape_name,
        "threads": torch.get_num_threads(),
    }
    rows = []
    for case, (shape, providers) in case_table.items():
        if only_cases and case not in only_cases:
            continue
        names = [n for n in providers() if not only_providers or n in only_providers]
        results = _measure_case(module, bench, case, names, shape_name, repeat)
        rows += _rows(meta, case, shape, results, baseline, work_unit)
    dims = " ".join(f"{k}={v}" for k, v in next(iter(case_table.values()))[0].items())
    note = f"[{meta['device']}, {meta['threads']} thread(s) @ {meta['commit']}, {shape_name}: {dims}]"
    print(format_table(bench, rows, note))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_DIR / f"{bench}.jsonl", "a") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return rows


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
    verdict = lambda x, limit: "ok" if x <= limit else "MISSED"
    line = (
        f"targets [{case} / {ours}]: memory {mem:.2f}x naive (<= {mem_max}) {verdict(mem, mem_max)}; "
        f"time {t_naive:.2f}x naive (<= {time_max}) {verdict(t_naive, time_max)}"
    )
    if peer in by:
        t_peer = r["median_s"] / by[peer]["median_s"]
        line += f"; time {t_peer:.2f}x {peer} (<= {peer_max}) {verdict(t_peer, peer_max)}"
        if "gemm-floor" in by:  # what the GEMMs alone leave room for
            line += f" (the GEMMs alone: {by['gemm-floor']['median_s'] / by[peer]['median_s']:.2f}x {peer})"
    print(line)


def bench_main(
    module: str, bench: str, doc: str, cases: Callable[[str], dict], target_case: str, argv=None
) -> None:
    """Command line of a kernel benchmark: the table, then the issue's CPU targets for `target_case`."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes")
    ap.add_argument("--repeat", type=int, default=None, help="timed calls per provider (default 3, quick 5)")
    ap.add_argument("--providers", nargs="*", help="run only these providers")
    ap.add_argument("--cases", nargs="*", help="run only these cases (names as in the table)")
    ap.add_argument("--worker", nargs=2, metavar=("CASE", "PROVIDER"), help=argparse.SUPPRESS)
    ap.add_argument("--shape", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    shape_name = args.shape or ("quick" if args.quick else "full")
    table = cases(shape_name)
    if args.worker:
        serve(table, *args.worker)
        return
    repeat = args.repeat or (5 if shape_name == "quick" else 3)
    rows = run_alternating(module, bench, table, shape_name, repeat, args.providers, args.cases)
    for ours in ("rk", "rk-fused"):
        for peer in ("liger", "liger-compiled"):
            check_targets(rows, target_case, ours, 0.25, 1.0, peer, 0.7)
