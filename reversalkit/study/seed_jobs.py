"""Seeds side by side: `seed_jobs: N` (`reversalkit study --jobs N`) runs up to N seeds of a
multi-seed study at once, each as its own `reversalkit study` process on its own seed directory.

Each process makes the run the sequential loop would make (same config, directory and resume).
Its CPU threads are `num_threads` when that is set, and then every artifact is bit for bit the
one the seeds give run one after another; otherwise `cpu_count // N`, and a float32 sum taken with
another number of threads may round differently in the last bit (so may the same run on a machine
with another core count). A small model uses many cores poorly from one process, and several
processes of a few threads each use them well. On 2 cores there is nothing to gain (two seeds side
by side ran at 1.05x the speed of one after another, three at 0.97x; benchmarks/RESULTS.md), so
`seed_jobs: 0` (auto) gives one job per two cores (per `num_threads` cores when set), at most one
per seed, and one job on CUDA or under torchrun.

The parent writes each seed's config to `<out_dir>/jobs/seed<N>.yaml`, starts the processes,
logs each seed's progress (its finished steps, from its manifest) at most once a minute, and
pools the seeds when all have ended. A seed that fails leaves the others running; the parent
then names it and its log, and the same command resumes it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reversalkit.study.config import StudyConfig
from reversalkit.study.store import RunStore
from reversalkit.tasks.registry import portable_task

log = logging.getLogger("reversalkit.study")

POLL_S = 2.0  # how often the parent looks at its children
REPORT_S = 60.0  # at most one progress line per this many seconds
GRACE_S = 15.0  # after Ctrl-C, how long the children may take to stop on their own


def cpu_count() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_jobs(cfg: StudyConfig, *, device: str, distributed: bool, cpus: int | None = None) -> int:
    """How many seeds run at once: cfg.seed_jobs when >= 1, else (auto) one per two cores (per
    `num_threads` cores when set), at most one per seed; 1 on CUDA or under torchrun (auto or not,
    torchrun's ranks already share each seed), and 1 when a task exists only in this process."""
    seeds = len(cfg.seeds)
    if seeds <= 1 or distributed:
        return 1
    local = [n for n in [cfg.task, *cfg.ood_task_names()] if not portable_task(n)]
    if local:
        if cfg.seed_jobs > 1:
            log.warning("seed_jobs %d: task %r is registered in this process only, so the seeds run here, "
                        "one after another (name it as 'module:Class' to run them side by side)",
                        cfg.seed_jobs, local[0])
        return 1
    if cfg.seed_jobs >= 1:
        return min(cfg.seed_jobs, seeds)
    if device.startswith("cuda"):
        return 1
    per_job = cfg.num_threads or 2
    return max(1, min(seeds, (cpus or cpu_count()) // per_job))


def threads_per_job(cfg: StudyConfig, jobs: int, cpus: int | None = None) -> int:
    return cfg.num_threads or max(1, (cpus or cpu_count()) // jobs)


def _steps_done(seed_dir: Path) -> int:
    try:
        return len(RunStore.read_only(seed_dir).steps())
    except (FileNotFoundError, ValueError):  # not created yet, or a manifest being replaced
        return 0


class SeedJobsFailed(RuntimeError):
    """Some seed processes of a parallel multi-seed study exited with an error."""


class _Job:
    def __init__(self, cfg: StudyConfig, config_path: Path, planned: int):
        self.cfg, self.config_path, self.planned = cfg, config_path, planned
        self.proc: subprocess.Popen | None = None
        self.relay: threading.Thread | None = None
        self.started = self.ended = 0.0

    @property
    def seed(self) -> int:
        return self.cfg.seed

    @property
    def dir(self) -> Path:
        return Path(self.cfg.out_dir)

    def start(self, *, fresh: bool, threads: int) -> None:
        cmd = [sys.executable, "-m", "reversalkit", "study", "--quiet", "--config", str(self.config_path)]
        if fresh:
            cmd.append("--fresh")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        # stdout holds only the child's closing "report:" line; its warnings and errors go to this
        # process's stderr, each line marked with the seed
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, errors="replace")
        self.relay = threading.Thread(target=self._relay, daemon=True)
        self.relay.start()
        self.started = time.perf_counter()

    def _relay(self) -> None:
        for line in self.proc.stderr:
            sys.stderr.write(f"seed {self.seed}: {line}")
            sys.stderr.flush()

    def poll(self) -> int | None:
        rc = self.proc.poll()
        if rc is not None and not self.ended:
            self.ended = time.perf_counter()
            self.relay.join()  # its last lines (an error) print before the parent's verdict
        return rc


def _stop(jobs: Sequence[_Job], grace_s: float) -> None:
    """Wait up to `grace_s` for the processes to end, then terminate the ones still running."""
    deadline = time.perf_counter() + grace_s
    for job in jobs:
        try:
            job.proc.wait(timeout=max(0.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            job.proc.terminate()
            job.proc.wait()
        job.relay.join(timeout=5.0)


def run_seed_jobs(parent: RunStore, subs: Sequence[StudyConfig], study: Callable[[StudyConfig], Any], *,
                  jobs: int, fresh: bool) -> None:
    """Run each seed's config of `subs` in up to `jobs` processes (`threads_per_job`); returns
    when all have ended, and raises SeedJobsFailed naming the seeds that failed. `study(config)`
    makes a `Study`: its `check()` runs once here, so a bad task or model fails once, before any
    process starts, and its `planned_steps()` gives each seed's progress its total."""
    study(subs[0]).check()
    threads = threads_per_job(subs[0], jobs)
    pending = []
    for sub in subs:
        path = parent.write_text(f"jobs/seed{sub.seed}.yaml", sub.to_yaml())
        pending.append(_Job(sub, path, len(study(sub).planned_steps())))
    log.info("%d seeds, %d at a time, each a process of %d thread(s); their logs: %s",
             len(pending), jobs, threads, ", ".join(str(j.dir / "study.log") for j in pending))
    running: list[_Job] = []
    done: list[_Job] = []
    last_report = time.perf_counter()
    try:
        while pending or running:
            while pending and len(running) < jobs:
                job = pending.pop(0)
                job.start(fresh=fresh, threads=threads)
                running.append(job)
                log.info("seed %d: started (pid %d)", job.seed, job.proc.pid)
            time.sleep(POLL_S)
            for job in list(running):
                rc = job.poll()
                if rc is None:
                    continue
                running.remove(job)
                done.append(job)
                minutes = (job.ended - job.started) / 60
                if rc == 0:
                    log.info("seed %d: done in %.1f min", job.seed, minutes)
                else:
                    log.error("seed %d: failed (exit %d) after %.1f min; its error is above, its log %s",
                              job.seed, rc, minutes, job.dir / "study.log")
            if running and time.perf_counter() - last_report >= REPORT_S:
                last_report = time.perf_counter()
                log.info("seeds: " + ", ".join(f"{j.seed} {_steps_done(j.dir)}/{j.planned} steps"
                                               for j in running))
    except BaseException as exc:
        # Ctrl-C reaches the children too: they get a moment to say where they stopped
        _stop(running, grace_s=GRACE_S if isinstance(exc, KeyboardInterrupt) else 0.0)
        raise
    failed = [j for j in done if j.proc.returncode != 0]
    if failed:
        names = ", ".join(f"seed {j.seed} ({j.dir / 'study.log'})" for j in failed)
        raise SeedJobsFailed(f"{len(failed)} of {len(done)} seed runs failed: {names}; the others are "
                           "complete. Fix the cause and rerun the same command: finished seeds and "
                           "steps are kept.")
