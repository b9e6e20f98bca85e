"""Seeds side by side (`seed_jobs`, `reversalkit study --jobs N`): how many run at once, and that
a seed run in its own process writes what the sequential loop writes, bit for bit."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reversalkit import cli
from reversalkit.study import Study, StudyConfig
from reversalkit.study.config import NON_RESULT_KEYS
from reversalkit.study.seed_jobs import SeedJobsFailed, resolve_jobs, threads_per_job
from reversalkit.study.store import RunStore
from reversalkit.tasks import REGISTRY, register_task
from reversalkit.tasks.registry import portable_task

# a two-seed study of the built-in synthetic task, small enough for seconds a seed
SMALL = [
    "task_options={train_size: 64, test_size: 16, ood_size: 16, id_steps: [2], ood_steps: [2], "
    "ood_numbers: id}",
    "methods=[sft, dpo]", "iterations=2", "samples_per_problem=2", "eval_samples=4", "m1_is_samples=0",
    "pass_k=[1, 2, 4]", "max_new_tokens=32", "sbert_model=none", "bootstrap=50", "device=cpu",
    "progress=false",
    "num_threads=1", "seeds=[0, 1]",
    "tiny_model={hidden_size: 32, num_layers: 2, num_heads: 2, num_kv_heads: 1}",
    "m1_train={lr: 1.0e-2, epochs: 100, max_steps: 20, batch_size: 16, max_length: 128}",
    "sft_train={lr: 1.0e-3, batch_size: 16, max_length: 128}",
    "dpo_train={lr: 1.0e-3, batch_size: 8, max_length: 128}",
]


def small_config(out_dir, *more) -> StudyConfig:
    return StudyConfig.preset("tiny").with_overrides([*SMALL, *more, f"out_dir={out_dir}"])


def _cfg(**changes) -> StudyConfig:
    return StudyConfig.preset("tiny").replace(**changes)


@pytest.mark.parametrize(("changes", "device", "distributed", "cpus", "jobs"), [
    ({}, "cpu", False, 2, 1),  # auto: one job per two cores
    ({}, "cpu", False, 8, 3),  # ... at most one per seed
    ({}, "cpu", False, 5, 2),
    ({"num_threads": 4}, "cpu", False, 8, 2),  # ... per num_threads cores when set
    ({"num_threads": 1}, "cpu", False, 2, 2),
    ({}, "cuda", False, 64, 1),  # auto keeps CUDA to one process
    ({"seed_jobs": 2}, "cuda", False, 64, 2),  # unless asked
    ({"seed_jobs": 5}, "cpu", False, 2, 3),  # never more jobs than seeds
    ({"seed_jobs": 3}, "cpu", True, 64, 1),  # torchrun's ranks share each seed
    ({"seeds": ()}, "cpu", False, 64, 1),
    ({"seeds": (4,)}, "cpu", False, 64, 1),
])
def test_how_many_seeds_run_at_once(changes, device, distributed, cpus, jobs):
    assert resolve_jobs(_cfg(**changes), device=device, distributed=distributed, cpus=cpus) == jobs


def test_threads_split_the_cores_unless_fixed():
    assert threads_per_job(_cfg(), 3, cpus=8) == 2
    assert threads_per_job(_cfg(), 2, cpus=2) == 1
    assert threads_per_job(_cfg(num_threads=3), 2, cpus=2) == 3


def test_a_task_registered_in_this_process_keeps_the_seeds_here(caplog):
    assert portable_task("synthetic") and portable_task("reversalkit.tasks.synthetic:SyntheticTask")
    assert not portable_task("no-such-task")

    class Local:
        pass

    register_task("local-only", Local)
    try:
        assert not portable_task("local-only")
        cfg = _cfg(task="local-only", seed_jobs=3)
        assert resolve_jobs(cfg, device="cpu", distributed=False, cpus=64) == 1
        assert "registered in this process only" in caplog.text
        ood = _cfg(ood_tasks=("local-only:test",))
        assert resolve_jobs(ood, device="cpu", distributed=False, cpus=64) == 1
        # an OOD set of a task named 'module:Class' travels: its name is everything before the split
        spec = _cfg(ood_tasks=("reversalkit.tasks.synthetic:SyntheticTask:test_ood",))
        assert resolve_jobs(spec, device="cpu", distributed=False, cpus=64) == 3
    finally:
        REGISTRY.unregister("local-only")
    original = REGISTRY.factory("synthetic")
    register_task("synthetic", Local, overwrite=True)  # a built-in name replaced by user code
    try:
        assert not portable_task("synthetic")
    finally:
        register_task("synthetic", original, overwrite=True)
    assert portable_task("synthetic")


def _artifacts(seed_dir: Path) -> dict[str, bytes]:
    """Every sample file (decompressed) and checkpoint of a seed's run."""
    out = {}
    for path in sorted((seed_dir / "nodes").rglob("*")):
        if path.name.endswith(".jsonl.gz"):
            out[str(path.relative_to(seed_dir))] = gzip.decompress(path.read_bytes())
        elif path.suffix == ".safetensors":
            out[str(path.relative_to(seed_dir))] = path.read_bytes()
    return out


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory):
    root = tmp_path_factory.mktemp("seed_jobs")
    argv = [sys.executable, "-m", "reversalkit", "-q", "study", "--preset", "tiny", "--jobs", "2",
            "--out", str(root / "jobs")]
    for item in SMALL:
        argv += ["--set", item]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    sequential = Study(small_config(root / "sequential", "seed_jobs=1"), print_summary=False).run()
    return root, done, sequential


def test_side_by_side_writes_what_one_after_another_writes(side_by_side):
    root, done, sequential = side_by_side
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (root / "jobs" / "jobs").iterdir()) == ["seed0.yaml", "seed1.yaml"]
    for seed in ("seed0", "seed1"):
        ours, theirs = _artifacts(root / "jobs" / seed), _artifacts(root / "sequential" / seed)
        assert len(ours) > 10 and ours.keys() == theirs.keys()
        assert [k for k in ours if ours[k] != theirs[k]] == []
    pooled = json.loads((root / "jobs" / "results.json").read_text())
    assert pooled["methods"] == sequential["methods"]


def test_quiet_children_and_parent_print_no_progress(side_by_side):
    _, done, _ = side_by_side
    assert "done in" not in done.stderr and "started" not in done.stderr  # INFO lines stay in the logs
    assert "pooled over seeds [0, 1]" in done.stdout


def test_a_failed_seed_is_named_and_the_others_finish(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = small_config(out, "seed_jobs=2")
    RunStore.open(out, cfg.to_dict(), ignore_keys=(*NON_RESULT_KEYS, "seeds", "seed")).close()  # the parent
    (out / "seed1").mkdir()
    (out / "seed1" / "notes.txt").write_text("not a run")  # seed 1's process refuses this directory
    with pytest.raises(SeedJobsFailed, match=r"1 of 2 seed runs failed: seed 1 \("):
        Study(cfg, print_summary=False).run()
    planned = Study(cfg.replace(seeds=(), seed=0, out_dir=str(out / "seed0"))).planned_steps()
    manifest = (out / "seed0" / "manifest.json").read_text()
    assert all(f'"{step}"' in manifest for step in planned)
    argv = ["-q", "study", "--preset", "tiny", "--out", str(out)]
    for item in [*SMALL, "seed_jobs=2"]:
        argv += ["--set", item]
    capsys.readouterr()
    assert cli.main(argv) == 1  # the finished seed is kept; seed 1 fails again, in one line
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("reversalkit study: 1 of 2 seed runs failed: seed 1")
    assert f"seed 1: reversalkit study: error: {out / 'seed1'} exists, is not empty" in "\n".join(err)


def test_dry_run_says_how_many_seeds_run_at_once(capsys, tmp_path):
    argv = ["study", "--preset", "tiny", "--out", str(tmp_path / "o"), "--set", "device=cpu", "--dry-run"]
    assert cli.main([*argv, "--jobs", "3"]) == 0
    err = capsys.readouterr().err.strip()
    assert "x 3 seed run(s) planned in" in err and err.endswith(", 3 at a time")
    assert cli.main([*argv, "--jobs", "1"]) == 0
    assert capsys.readouterr().err.strip().endswith(f"planned in {tmp_path / 'o'}")


@pytest.mark.timeout(300)
def test_ctrl_c_stops_every_seed_and_the_rerun_finishes(tmp_path):
    """A terminal's Ctrl-C (SIGINT to the whole process group) stops the parent and its seeds; each
    seed says where it stopped, no process is left, and the same command then finishes the study."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "reversalkit", "-q", "study", "--preset", "tiny", "--out", str(out),
            "--jobs", "2"]
    for item in [*SMALL, "m1_train.max_steps=600"]:  # M1 trains long enough to be interrupted
        argv += ["--set", item]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not all((out / f"seed{s}" / "study.log").exists() for s in (0, 1)):  # both seeds started
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    for seed in (0, 1):
        assert f"seed {seed}: reversalkit study: stopped in m1/train of {out / f'seed{seed}'}; run the" in err
    assert err.strip().splitlines()[-1] == "reversalkit study: stopped; run the same command to resume"
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # the group is gone: no seed process outlived the parent
    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "results.json").exists() and "pooled over seeds [0, 1]" in rerun.stdout
