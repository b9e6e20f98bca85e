"""A multi-seed study with its seeds one after another and side by side (`--jobs`), whole commands.

    python -m benchmarks.bench_seed_jobs [--jobs N] [--seeds 0,1] [--keep DIR] [--set key=value ...]

Runs `reversalkit study --preset tiny` shrunk to a few minutes (600 train problems, 2 iterations of
SFT and DPO, 100 M1 steps) twice, fresh each time: `--jobs 1` (one process, every core's threads)
and `--jobs N` (N processes, cores/N threads each), and prints the wall seconds of each command,
start-up and pooling included, with their ratio. The sample files and checkpoints of the two are
then compared: equal bit for bit when the thread count per process is the same, and otherwise
different at most where float32 sums round differently with another number of threads.
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHRINK = [
    "task_options={train_size: 600, test_size: 100, ood_size: 100, id_steps: [2], ood_steps: [2], "
    "ood_numbers: id}",
    "methods=[sft, dpo]", "iterations=2", "m1_is_samples=0",
    "m1_train.max_steps=100",
]


def run(out: Path, jobs: int, seeds: str, overrides: list[str]) -> float:
    argv = [sys.executable, "-m", "reversalkit", "-q", "study", "--preset", "tiny", "--seeds", seeds,
            "--jobs", str(jobs), "--out", str(out)]
    for item in [*SHRINK, *overrides]:
        argv += ["--set", item]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def differing(a: Path, b: Path) -> tuple[int, int]:
    """(files compared, files that differ) over the sample files and checkpoints of two runs."""
    files = [p for p in sorted(a.rglob("*")) if p.name.endswith(".jsonl.gz") or p.suffix == ".safetensors"]
    read = (lambda p: gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes())
    return len(files), sum(read(p) != read(b / p.relative_to(a)) for p in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--keep", type=Path, help="keep both runs under this directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="more study overrides")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_seed_jobs_"))
    cores = len(os.sched_getaffinity(0))
    one = run(root / "one_after_another", 1, args.seeds, args.set)
    side = run(root / "side_by_side", args.jobs, args.seeds, args.set)
    compared, differ = differing(root / "one_after_another", root / "side_by_side")
    print(f"seeds {args.seeds} on {cores} cores")
    print(f"{'mode':<44}{'wall s':>8}{'ratio':>8}")
    print(f"{'--jobs 1 (one process, ' + str(cores) + ' threads)':<44}{one:>8.1f}{1.0:>8.2f}")
    threads = max(1, cores // args.jobs)
    print(f"{f'--jobs {args.jobs} ({args.jobs} processes, {threads} thread(s) each)':<44}{side:>8.1f}"
          f"{one / side:>8.2f}x the speed of --jobs 1")
    print(f"artifacts: {compared} compared, {differ} differ")


if __name__ == "__main__":
    main()
