"""Benchmark: n-gram counting for distinct-n, C++ (reversalkit._C) vs the pure-Python reference.

The workload is the study's: groups of 50 sampled solutions per problem, ~100 words each, counts of
orders 1..5 (what `distinct_ngrams_avg_groups` needs). Both providers lower-case and split the
texts themselves, so the timings cover the whole metric. Counts are checked equal before timing.
The C++ path runs single-threaded and on all cores (groups are independent); Python is one thread.

    python -m benchmarks.bench_ngrams            # 100k texts (2,000 groups of 50)
    python -m benchmarks.bench_ngrams --quick    # 10k texts
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from benchmarks.harness import Case, run_cases
from reversalkit._ext import native
from reversalkit.metrics import ngram_counts, ngram_counts_reference


def make_groups(num_texts: int, group_size: int = 50, words: int = 100, seed: int = 0) -> list[list[str]]:
    """Zipf-distributed words over a 5,000-word vocabulary (some capitalized, some numbers), so
    n-gram repetition resembles sampled math solutions rather than uniform noise."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(4000)] + [str(i) for i in range(900)] + [f"Cap{i}" for i in range(100)]
    probs = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    probs /= probs.sum()
    lengths = rng.integers(words // 2, words * 3 // 2 + 1, size=num_texts)  # mean ~= words
    flat = rng.choice(len(vocab), size=int(lengths.sum()), p=probs)
    texts, pos = [], 0
    for n in lengths:
        texts.append(" ".join(vocab[j] for j in flat[pos:pos + n]))
        pos += n
    return [texts[i:i + group_size] for i in range(0, num_texts, group_size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k texts instead of 100k")
    parser.add_argument("--max-n", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if native() is None:
        raise SystemExit("reversalkit._C is not built; run `pip install -e .` first")

    num_texts = 10_000 if args.quick else 100_000
    threads = os.cpu_count() or 1
    groups = make_groups(num_texts)
    words = sum(len(t.split()) for g in groups for t in g)
    fast = ngram_counts(groups, args.max_n, backend="native")
    if not np.array_equal(fast, ngram_counts_reference(groups, args.max_n)):
        raise SystemExit("C++ and Python counts differ; not timing a wrong result")

    case = Case(
        f"{num_texts // 1000}k texts x ~100 words, n=1..{args.max_n}",
        {
            "c++ 1 thread": lambda: ngram_counts(groups, args.max_n, backend="native", num_threads=1),
            f"c++ {threads} threads": lambda: ngram_counts(groups, args.max_n, backend="native",
                                                           num_threads=threads),
            "python": lambda: ngram_counts_reference(groups, args.max_n),
        },
        baseline="python",
        params={"num_texts": num_texts, "groups": len(groups), "max_n": args.max_n, "words": words},
        work=words, work_unit="words",
    )
    # No memory column: both providers allocate far below the resident-set noise of this process.
    rows = run_cases("ngrams", [case], warmup=1 if args.quick else 0, repeat=args.repeat,
                     measure_memory=False)
    for r in rows:
        if r["provider"].startswith("c++"):
            print(f"{r['provider']} speedup over python: {r['speedup']:.1f}x (target >= 20x)")


if __name__ == "__main__":
    main()
