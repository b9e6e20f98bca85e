"""Shared benchmark harness: timing, peak memory, side-by-side tables, machine-readable rows.

Every `bench_<op>.py` describes its cases and providers and hands them to this module, which
times each provider (median of repeats, with min-max), measures peak memory, prints one table in
which every row is compared with the case's baseline as a ratio, and appends JSON lines tagged with
device name and git commit to `benchmarks/results/<bench>.jsonl`.

    from benchmarks.harness import Case, run_cases
    run_cases("ngrams", [Case("100k texts", {"c++": f1, "python": f2}, baseline="python")])
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass
class Timing:
    median_s: float
    min_s: float
    max_s: float
    repeats: int
    peak_mem_bytes: int | None = None


@dataclasses.dataclass
class Case:
    """One benchmark setting. `providers` maps a name to a zero-argument callable doing the work."""

    name: str
    providers: dict[str, Callable[[], Any]]
    baseline: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    work: float | None = None  # units of work per call (e.g. tokens) for a throughput column
    work_unit: str = ""


def _sync(device: str | None) -> None:
    if device and device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _timed_once(fn: Callable[[], Any], device: str | None) -> float:
    """Seconds of one fn() call, from a collected heap and an idle device."""
    gc.collect()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def time_fn(fn: Callable[[], Any], *, warmup: int = 1, repeat: int = 5, device: str | None = None,
            min_time_s: float = 0.0) -> Timing:
    """Median/min/max wall time of fn() over `repeat` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    t_start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - t_start) < min_time_s:
        times.append(_timed_once(fn, device))
        if len(times) >= 1000:
            break
    return Timing(statistics.median(times), min(times), max(times), len(times))


def time_interleaved(providers: dict[str, Callable[[], Any]], *, warmup: int = 1, repeat: int = 5,
                     device: str | None = None) -> tuple[dict[str, Timing], dict[str, str]]:
    """Like time_fn for several providers at once, one run of each in turn (A B A B ...): a machine
    whose speed drifts during the benchmark, or state one provider leaves behind, then weighs on
    all of them alike. -> (timings of the providers that ran, {name: error} of those that failed)."""
    times: dict[str, list[float]] = {name: [] for name in providers}
    failed: dict[str, str] = {}

    def once(name: str, fn: Callable[[], Any], record: bool) -> None:
        try:
            dt = _timed_once(fn, device)
        except Exception as exc:  # a failing peer must not hide the other providers' numbers
            failed[name] = f"{type(exc).__name__}: {exc}"
            return
        if record:
            times[name].append(dt)

    for _ in range(warmup):
        for name, fn in providers.items():
            if name not in failed:
                once(name, fn, record=False)
    for _ in range(repeat):
        for name, fn in providers.items():
            if name not in failed:
                once(name, fn, record=True)
    timings = {name: Timing(statistics.median(ts), min(ts), max(ts), len(ts))
               for name, ts in times.items() if ts and name not in failed}
    return timings, failed


def _read_status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def peak_extra_memory(fn: Callable[[], Any], device: str | None = None) -> int | None:
    """Peak memory above the level at the call, in bytes.

    CUDA: the caching allocator's peak statistic. CPU (Linux): the kernel's resident-set high-water
    mark, reset through /proc/self/clear_refs just before the call; freed-but-retained heap pages
    would hide allocations, so benchmarks that report CPU memory run each provider in a fresh
    process (`benchmarks/_kernel_common.py`). Returns None where neither mechanism is available.
    """
    if device and device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    try:
        gc.collect()
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        base = _read_status_kb("VmRSS")
        fn()
        return max(0, (_read_status_kb("VmHWM") - base) * 1024)
    except (OSError, RuntimeError):
        return None


def device_name(device: str | None = None) -> str:
    if device and device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {cpu} ({os.cpu_count()} cores)"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _fmt_mem(b: int | None) -> str:
    if b is None:
        return "-"
    return f"{b / 2**20:.1f} MiB"


def format_table(bench: str, rows: list[dict[str, Any]], header_note: str = "") -> str:
    cols = ["case", "provider", "median", "min-max", "vs baseline", "peak mem", "mem vs base", "throughput"]
    table = [cols]
    for r in rows:
        thr = f"{r['throughput']:.3g} {r['work_unit']}/s" if r.get("throughput") else "-"
        table.append([
            r["case"], r["provider"] + (" (base)" if r["is_baseline"] else ""),
            _fmt_time(r["median_s"]), f"{_fmt_time(r['min_s'])}-{_fmt_time(r['max_s'])}",
            f"{r['speedup']:.2f}x faster" if r.get("speedup") else "-",
            _fmt_mem(r.get("peak_mem_bytes")),
            f"{r['mem_ratio']:.2f}x" if r.get("mem_ratio") is not None else "-", thr,
        ])
    widths = [max(len(str(row[i])) for row in table) for i in range(len(cols))]
    lines = [f"== {bench} == {header_note}".rstrip()]
    for i, row in enumerate(table):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_cases(bench: str, cases: list[Case], *, device: str | None = None, warmup: int = 1,
              repeat: int = 5, measure_memory: bool = True, min_time_s: float = 0.0,
              save: bool = True, interleave: bool = False) -> list[dict[str, Any]]:
    """Time every provider of every case, print the table, append JSON rows; returns the rows.

    interleave: run the providers of a case in turn, one run each per repeat (`time_interleaved`),
    instead of all repeats of one provider before the next (min_time_s does not apply then)."""
    rows: list[dict[str, Any]] = []
    meta = {"bench": bench, "device": device_name(device), "commit": git_commit(),
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    for case in cases:
        if case.baseline not in case.providers:
            raise ValueError(f"case {case.name!r}: baseline {case.baseline!r} is not among its providers")
        results: dict[str, Timing] = {}
        if interleave:
            results, failed = time_interleaved(case.providers, warmup=warmup, repeat=repeat, device=device)
            for name, err in failed.items():
                print(f"[{bench}] {case.name} / {name} failed: {err}")
        for name, fn in case.providers.items():
            if interleave and name not in results:
                continue
            try:
                t = results[name] if interleave else time_fn(fn, warmup=warmup, repeat=repeat, device=device,
                                                             min_time_s=min_time_s)
                if measure_memory:
                    t.peak_mem_bytes = peak_extra_memory(fn, device)
            except Exception as exc:  # a failing peer must not hide the other providers' numbers
                print(f"[{bench}] {case.name} / {name} failed: {type(exc).__name__}: {exc}")
                results.pop(name, None)
                continue
            results[name] = t
        base = results.get(case.baseline)
        for name, t in results.items():
            row = {**meta, "case": case.name, "provider": name, "is_baseline": name == case.baseline,
                   **case.params, **dataclasses.asdict(t), "work_unit": case.work_unit}
            if base:
                row["speedup"] = base.median_s / t.median_s
                if base.peak_mem_bytes and t.peak_mem_bytes is not None:
                    row["mem_ratio"] = t.peak_mem_bytes / base.peak_mem_bytes
            if case.work:
                row["throughput"] = case.work / t.median_s
            rows.append(row)
    print(format_table(bench, rows, f"[{meta['device']} @ {meta['commit']}]"))
    if save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        with open(RESULTS_DIR / f"{bench}.jsonl", "a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    return rows
