"""The same shrunken study on 1 and on 2 ranks (torchrun, gloo on the CPU): each stage side by side.

    python -m benchmarks.bench_distributed [--nproc 2] [--keep DIR] [--set key=value ...]

Runs the study of `tests/test_dist_study.py` (easysum task, tiny model, SFT and DPO, 2 iterations)
once as one process and once under `torchrun --nproc-per-node N`, each with one intra-op thread per
rank, and reads the per-step times from the run manifests. Per stage (M1 training, sampling, DPO
reference, round training, evaluation) it prints the seconds on 1 rank, on N ranks, the speedup and
rank 0's share of the stage spent inside collectives (transfer plus waiting for slower ranks: the
load imbalance of the shards shows up there). On a machine with fewer free cores than ranks the
ranks share cores and the speedup says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("m1/train", "m1/eval", "sample", "ref", "train", "eval")


def _stage(step: str) -> str:
    return step if step.startswith("m1/") and step != "m1/sample" else step.rsplit("/", 1)[-1]


def run(nproc: int, out: Path, overrides: list[str]) -> tuple[float, dict[str, dict[str, float]]]:
    """Wall seconds of the whole job and stage -> {"seconds", "comm_seconds"} summed over steps."""
    worker = ROOT / "tests" / "dist_worker.py"
    launch = [sys.executable, str(worker)] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        str(worker)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run([*launch, "study", str(out), *overrides], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{nproc}-rank study failed:\n{proc.stderr[-3000:]}")
    stages: dict[str, dict[str, float]] = {}
    for step, info in json.loads((out / "manifest.json").read_text())["steps"].items():
        row = stages.setdefault(_stage(step), {"seconds": 0.0, "comm_seconds": 0.0})
        row["seconds"] += info["seconds"]
        row["comm_seconds"] += info.get("comm_seconds", 0.0)
    return wall, stages


def table(nproc: int, one: tuple[float, dict], many: tuple[float, dict]) -> str:
    head = f"| stage | 1 rank (s) | {nproc} ranks (s) | speedup | comm share ({nproc} ranks) |"
    lines = [head, "|" + "---|" * 5]
    rows = [(s, one[1].get(s), many[1].get(s)) for s in STAGES]
    rows.append(("whole job (wall, incl. start-up)", {"seconds": one[0]}, {"seconds": many[0]}))
    for stage, a, b in rows:
        if a is None or b is None:
            continue
        share = f"{b['comm_seconds'] / b['seconds']:.0%}" if b.get("comm_seconds") and b["seconds"] else "-"
        speedup = a["seconds"] / b["seconds"]
        lines.append(f"| {stage} | {a['seconds']:.2f} | {b['seconds']:.2f} | {speedup:.2f}x | {share} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--keep", help="keep the two run directories under this folder")
    ap.add_argument("--set", action="append", default=[], help="extra study overrides key=value")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        one = run(1, base / "one", args.set)
        many = run(args.nproc, base / f"ranks{args.nproc}", args.set)
    print(f"bench_distributed: shrunken study, 1 vs {args.nproc} ranks, gloo on CPU, "
          f"{os.cpu_count()} cores on this machine")
    print(table(args.nproc, one, many))
    return 0


if __name__ == "__main__":
    sys.exit(main())
