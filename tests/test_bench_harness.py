"""The benchmark harness: interleaved timing runs the providers in turn and keeps a failing one
from hiding the others."""

import importlib.util
import sys
from pathlib import Path

# By path: the suite also runs from outside the repository (nox), where `benchmarks` is no package.
_spec = importlib.util.spec_from_file_location(
    "rk_bench_harness", Path(__file__).resolve().parents[1] / "benchmarks" / "harness.py")
harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = harness  # dataclasses look their module up here
_spec.loader.exec_module(harness)
Case, run_cases, time_interleaved = harness.Case, harness.run_cases, harness.time_interleaved


def test_interleaved_providers_take_turns_and_a_failure_stays_local(capsys):
    order = []

    def provider(name, fail_on=None):
        def run():
            order.append(name)
            if len(order) == fail_on:
                raise RuntimeError("peer broke")
        return run

    timings, failed = time_interleaved({"a": provider("a"), "b": provider("b")}, warmup=1, repeat=3)
    assert order == ["a", "b"] * 4  # one warm-up round, then three timed rounds
    assert {n: t.repeats for n, t in timings.items()} == {"a": 3, "b": 3} and failed == {}

    order.clear()
    case = Case("c", {"base": provider("base"), "peer": provider("peer", fail_on=2)}, baseline="base")
    rows = run_cases("unit", [case], warmup=0, repeat=2, measure_memory=False, save=False, interleave=True)
    assert [r["provider"] for r in rows] == ["base"] and rows[0]["repeats"] == 2
    assert "peer failed: RuntimeError: peer broke" in capsys.readouterr().out


def test_study_totals_add_the_stages_of_a_round():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench_study imports benchmarks.harness
    try:
        spec = importlib.util.spec_from_file_location(
            "rk_bench_study", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_study.py")
        study = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(study)
    finally:
        sys.path.pop(0)
    times = {"sample": (2.0, 8.0), "reward": (0.1, 0.1), "train (SFT round)": (3.0, 6.0),
             "train (DPO round)": (4.0, 9.0), "evaluate": (5.0, 10.0)}
    rows = [{"case": c, "provider": p, "median_s": t[i]} for c, t in times.items()
            for i, p in enumerate(("reversalkit", "peer: HF"))]
    rows.append({"case": "train (DPO round)", "provider": "reversalkit, reference pass", "median_s": 6.0})
    out = {(r["case"], r["provider"]): r["median_s"] for r in study.print_totals(rows)}
    assert out == {("full SFT round", "peer"): 24.1, ("full SFT round", "reversalkit"): 10.1,
                   ("full DPO round", "peer"): 27.1, ("full DPO round", "reversalkit"): 11.1,
                   ("full DPO round", "reversalkit, reference pass"): 13.1}
