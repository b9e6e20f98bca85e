"""Benchmark: exact nearest-neighbour similarity of every row to the rest of a corpus.

FAISS (IndexFlatIP) vs torch blocked matmul + topk vs numpy blocked matmul + argpartition, on
unit-normalized float32 embeddings of width 384 (all-MiniLM-L6-v2), k = 1 (what
`nearest_neighbor_similarity` asks). With CUDA, torch also runs on the GPU (and FAISS too when it
was built with GPUs). The winners per size feed `reversalkit.metrics.similarity.choose_backend`.
Before timing, every provider's ids are checked against numpy's on rows whose top-2 scores differ.

    python -m benchmarks.bench_similarity                      # 10k and 100k rows
    python -m benchmarks.bench_similarity --quick              # 10k rows
    python -m benchmarks.bench_similarity --sizes 10000 30000 --repeat 3
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.harness import Case, run_cases
from reversalkit.metrics.similarity import _faiss_gpu, nearest_neighbors


def make_embeddings(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def providers(x: np.ndarray, cuda: bool) -> dict:
    run = lambda backend, device: (lambda: nearest_neighbors(x, 1, backend=backend, device=device,
                                                             normalize=False))
    out = {"numpy": run("numpy", "cpu"), "faiss[cpu]": run("faiss", "cpu"), "torch[cpu]": run("torch", "cpu")}
    if cuda:
        out["torch[cuda]"] = run("torch", "cuda")
        if _faiss_gpu("cuda") is not None:
            out["faiss[cuda]"] = run("faiss", "cuda")
    return out


def check_agreement(x: np.ndarray, provs: dict) -> None:
    """Fail loudly if any provider's neighbour differs from numpy's where the answer is unique."""
    scores, ids = nearest_neighbors(x, 2, backend="numpy", normalize=False)
    unique = scores[:, 0] - scores[:, 1] > 1e-5  # margin well above float32 rounding at D=384
    for name, fn in provs.items():
        _, got = fn()
        bad = np.flatnonzero(unique & (got[:, 0] != ids[:, 0]))
        if bad.size:
            raise SystemExit(f"{name} disagrees with numpy on {bad.size} rows, e.g. row {bad[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k rows only")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--big-repeat", type=int, default=1,
                        help="repeats for sizes above 20k rows (one run takes minutes on a small CPU)")
    parser.add_argument("--check-max-rows", type=int, default=20_000,
                        help="check agreement only up to this many rows (the check costs 4 runs)")
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    sizes = [10_000] if args.quick else args.sizes
    cases = []
    for n in sizes:
        x = make_embeddings(n, args.dim)
        provs = providers(x, cuda)
        if n <= args.check_max_rows:
            check_agreement(x, provs)
        cases.append(Case(f"{n // 1000}k x {args.dim}, k=1", provs, baseline="numpy",
                          params={"rows": n, "dim": args.dim}, work=n, work_unit="rows"))
    # One warm-up per provider at the small size only: at 100k rows on a CPU a single run takes
    # minutes, and these brute-force searches have no first-call cost worth hiding there. With
    # CUDA the memory column would mix GPU and host figures, so it is left out there.
    for case in cases:
        big = case.params["rows"] > 20_000
        run_cases("similarity", [case], device="cuda" if cuda else None, warmup=0 if big else 1,
                  repeat=args.big_repeat if big else args.repeat, measure_memory=not (big or cuda))


if __name__ == "__main__":
    main()
