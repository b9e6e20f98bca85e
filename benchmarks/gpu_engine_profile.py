"""Where an end-to-end sampler run spends its time on a CUDA card: host (Python) and device.

    python -m benchmarks.gpu_engine_profile            # CUDA machine, repo root, ~1 min
    python -m benchmarks.gpu_engine_profile --dry-run  # tiny model on CPU

The workload is gpu_engine.py's (~1B Llama, bf16, prompts sharing a 100-token prefix, n=8, 128 new
tokens, temperature 0.75, top-p 0.95). It prints the wall time of the run, then the Python
functions with the most own time (cProfile) and, from one run under torch.profiler, the ops with
the most CPU and CUDA time. With the decode step's GPU time known (gpu_engine.py's roofline line),
the gap between tokens/s and rows / step time is host work; this shows which.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny model on CPU")
    ap.add_argument("--prompts", type=int, default=64)
    args = ap.parse_args(argv)
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.bench_sampler import build_model
    from benchmarks.gpu_engine import run_ours, workload
    from reversalkit.engine import Engine

    device = torch.device("cpu" if args.dry_run else "cuda")
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    with torch.device(device):
        model = build_model("tiny" if args.dry_run else "1b", 1100 if args.dry_run else 128256, device=device,
                            dtype=dtype)
    shape = (40, 8) if args.dry_run else (100, 28)  # shared prefix, own tokens
    prompts = workload(torch, model.config.vocab_size, args.prompts, *shape)
    n, new = (4, 24) if args.dry_run else (8, 128)
    engine = Engine(model, None, dtype=dtype, kv_cache_memory=None if args.dry_run else 16 << 30,
                    max_num_seqs=64 if args.dry_run else 512)
    run_ours(torch, engine, prompts[:4], 2, 8)  # warm-up: compile, graph capture
    lines = [f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}"]
    plain = run_ours(torch, engine, prompts, n, new)
    lines.append(f"plain run: {plain['tokens']} tokens in {plain['seconds']:.2f} s "
                 f"= {plain['tok_s']:,.0f} tok/s")
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    run_ours(torch, engine, prompts, n, new)
    prof.disable()
    lines.append(f"under cProfile: {time.perf_counter() - t:.2f} s")
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
    lines.append(buf.getvalue())
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as tp:
        run_ours(torch, engine, prompts, n, new)
    avg = tp.key_averages()
    lines.append(avg.table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=50))
    if device.type == "cuda":
        lines.append(avg.table(sort_by="self_cuda_time_total", row_limit=15, max_name_column_width=50))
    text = "\n".join(lines)
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_engine_profile.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
