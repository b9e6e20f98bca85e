"""Run untrusted Python programs (model-written MBPP code) safely: `run` one, `run_many` a batch.

    result = run("print(1)", timeout_s=5, memory_mb=512)   # SandboxResult(status="ok", ...)
    result = run("def f(x): return x * x", check=lambda calls: calls.name("f")(3) == 9)
    result.checked                                          # True: decided here, not in the program

A checked run (`check=`) grades without trusting the program: it loads the code under
`sandbox_harness` and only answers calls with plain data; the test code and the comparisons run in
the runner (`sandbox_calls`).

Layers, each used where the machine allows it (`support()` probes once; every result's
`isolation` lists the layers that held for it and `notes` why others did not, each also warned
about once):
- process: its own session/process group, closed stdin, a scrubbed environment, rlimits (CPU,
  processes, file size, open files, no core; address space only without a memory cgroup),
  no_new_privs; a supervisor (`sandbox_init.py`) reaps and kills what is left.
- namespaces (`sandbox_ns`): user, PID, network (a down loopback only), mount, IPC, UTS, cgroup;
  the program is host `nobody` where the runner is root, without capabilities; its own root holds
  only what the interpreter needs, read-only, a minimal /dev, its own /proc and a private tmpfs
  /tmp as scratch: no host socket, FIFO, device, /tmp, home or checkout is in view.
- seccomp (`sandbox_seccomp`): no new namespaces, mount, ptrace, bpf, perf_event_open, keys,
  userfaultfd, module/kexec calls; sockets only unix/inet/inet6.
- cgroups (`sandbox_cgroup`): a process-count and resident-memory bound on the whole tree.
What each needs from the host: namespaces, user namespaces for this user (Docker's default seccomp
profile refuses them) and, for its own /proc, a /proc that is not masked; `uid-nobody`, a root
runner (others can map only their own uid; without namespaces, an interpreter nobody can reach);
`minimal-root` as root, Linux >= 5.12 (open_tree, mount_setattr); `seccomp`, x86-64 or aarch64;
`cgroup-*`, writable cgroup v1 hierarchies or a delegated v2 group; `pid-max`, Linux >= 6.14.
The runner never blocks past `timeout_s` plus a few seconds of teardown, keeps only the first
`max_output_bytes` of each stream (more is `output_limit`), and returns only after every process
of the run is gone.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from reversalkit.config import Config, check, option
from reversalkit.tasks.sandbox_calls import Calls, ProgramFailed
from reversalkit.tasks.sandbox_cgroup import CgroupLayout, RunCgroup, probe_layout
from reversalkit.tasks.sandbox_io import Collector, descendants, wait_gone
from reversalkit.tasks.sandbox_status import classify, parse_status

INIT_SCRIPT = str(Path(__file__).with_name("sandbox_init.py"))
HARNESS_SCRIPT = Path(__file__).with_name("sandbox_harness.py")
SCRATCH_PREFIX = "rk-sandbox-"
STATUSES = ("ok", "error", "timeout", "memory", "output_limit", "sandbox_error")


@dataclasses.dataclass
class SandboxLimits(Config):
    timeout_s: float = option(5.0, "wall-clock limit per program in seconds (CPU limit = ceil + 1)")
    memory_mb: int = option(1024, "memory limit of the whole tree (cgroup, resident memory); without a "
                                  "cgroup, the address-space limit per process")
    max_processes: int = option(32, "processes/threads the program may have at once")
    max_output_bytes: int = option(65536, "bytes kept per stream; more ends the run as output_limit")
    max_reply_bytes: int = option(1 << 20, "largest reply of a checked run's program to one request")
    scratch_mb: int = option(64, "size of the scratch tmpfs and the largest file the program may write")
    max_open_files: int = option(64, "open file descriptors per process")
    isolation: str = option("auto", "'auto': namespaces and cgroups where available; 'none': rlimits only")
    python: str = option("", "interpreter that runs the program; empty = the current one")

    def __post_init__(self):
        check(self.timeout_s > 0, f"timeout_s must be > 0, got {self.timeout_s}")
        check(self.memory_mb >= 32,
              f"memory_mb must be >= 32 (the interpreter needs it), got {self.memory_mb}")
        check(self.max_processes >= 1, f"max_processes must be >= 1, got {self.max_processes}")
        check(self.max_output_bytes >= 0, f"max_output_bytes must be >= 0, got {self.max_output_bytes}")
        check(self.max_reply_bytes >= 1024, f"max_reply_bytes must be >= 1024, got {self.max_reply_bytes}")
        check(self.scratch_mb >= 1, f"scratch_mb must be >= 1, got {self.scratch_mb}")
        check(self.max_open_files >= 8, f"max_open_files must be >= 8, got {self.max_open_files}")
        check(self.isolation in ("auto", "none"),
              f"isolation must be 'auto' or 'none', got {self.isolation!r}")


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    """status: ok | error | timeout | memory | output_limit | sandbox_error. `returncode` is the
    program's exit code, -N when signal N killed it, None when it was stopped by the runner.
    In a checked run `checked` is what the grader's check returned (the program's text, exit code
    and status never enter it)."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float = 0.0
    truncated: bool = False
    isolation: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # why a layer did not hold (each also warned about once)
    checked: Any = None  # what `check` returned, in a checked run that it finished
    check_failure: str | None = None  # why `check` could not finish: the program stopped answering

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def passed(self) -> bool:
        """A checked run's verdict: its check returned True and the program then exited cleanly."""
        return self.ok and self.checked is True


@dataclasses.dataclass(frozen=True)
class SandboxSupport:
    """What this machine allows, from one probe run: `layers` are those that held for it."""

    namespaces: bool
    namespace_reason: str | None
    cgroup: CgroupLayout | None
    cgroup_reason: str | None
    layers: tuple[str, ...] = ()


_reported: set[str] = set()  # messages already shown, so that each degradation is reported once


def _report_once(message: str) -> None:
    if message not in _reported:
        _reported.add(message)
        warnings.warn(f"reversalkit sandbox: {message}", RuntimeWarning, stacklevel=3)


def support(isolation: str = "auto") -> SandboxSupport:
    """Which isolation layers this machine allows: probed once per process and mode by running
    an empty program with every layer asked for (each one that fails is warned about once)."""
    return _support(isolation)


@functools.lru_cache(maxsize=4)
def _support(isolation: str) -> SandboxSupport:
    if isolation == "none":
        return SandboxSupport(False, "isolation='none'", None, "isolation='none'")
    layout, cg_reason = probe_layout()
    _remove_stale_scratch()
    probe = _run_once("pass\n", SandboxLimits(timeout_s=30.0),
                      SandboxSupport(True, None, layout, cg_reason), None)
    namespaces = "userns" in probe.isolation
    ns_reason = None if namespaces else ("; ".join(probe.notes) or probe.stderr.strip()
                                         or f"probe status {probe.status}")
    if cg_reason:
        _report_once(f"per-run cgroups are unavailable ({cg_reason}); process and memory limits are "
                     "per process (rlimits) only")
    if not namespaces and cg_reason and os.geteuid() == 0:
        _report_once("running as root without a user namespace or cgroups: RLIMIT_NPROC does not bind "
                     "root, so only the timeout stops a fork bomb")
    return SandboxSupport(namespaces, ns_reason, layout, cg_reason, probe.isolation)


def _remove_stale_scratch() -> None:
    """Delete scratch directories of runners that were killed before they could clean up."""
    for d in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid = d.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and d.is_dir() and d.stat().st_uid == os.getuid():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                shutil.rmtree(d, ignore_errors=True)
            except PermissionError:
                pass


def _scrubbed_env(scratch: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch,
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _user_process_count() -> int:
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                pass
    return count


def _supervisor_config(lim: SandboxLimits, scratch: str, ns: bool, cg: RunCgroup | None,
                       fds: dict[str, int]) -> dict:
    # Without a user namespace RLIMIT_NPROC counts all of this user's processes, so it is raised by
    # the current count; inside one (Linux >= 5.14) it counts the namespace's own processes.
    nproc = lim.max_processes + 1 if ns else lim.max_processes + _user_process_count()
    return {
        "scratch": scratch, "scratch_mb": lim.scratch_mb, "python": lim.python or sys.executable,
        "ns": ns, "cgroups": cg.procs_files() if cg else [], "pid_max": 301, **fds,
        "seccomp": lim.isolation != "none", "drop_uid": lim.isolation != "none",
        "max_processes": lim.max_processes,
        "env": _scrubbed_env(scratch),
        # Address space only where no cgroup bounds resident memory: it counts every thread's
        # reserved stack (8 MiB each), so ThreadPoolExecutor(8) would not fit in 256 MB.
        "limits": {"cpu": math.ceil(lim.timeout_s) + 1,
                   "as": None if cg and cg.memory is not None else lim.memory_mb << 20,
                   "fsize": lim.scratch_mb << 20, "nofile": lim.max_open_files, "nproc": nproc},
    }


Check = Callable[[Calls], Any]


def run(code: str, *, timeout_s: float | None = None, memory_mb: int | None = None,
        limits: SandboxLimits | None = None, check: Check | None = None) -> SandboxResult:
    """Run Python source `code` as a sandboxed program; `timeout_s`/`memory_mb` override `limits`.

    With `check`, `code` is loaded by `sandbox_harness` and `check(calls)` runs here, in the
    runner, while the program answers its calls (see `sandbox_calls`); what it returns is the
    result's `checked`.
    """
    lim = limits or SandboxLimits()
    if timeout_s is not None or memory_mb is not None:
        lim = lim.replace(**{k: v for k, v in (("timeout_s", timeout_s), ("memory_mb", memory_mb))
                             if v is not None})
    return _run_once(code, lim, support(lim.isolation), check)


def _run_once(code: str, lim: SandboxLimits, sup: SandboxSupport, check: Check | None) -> SandboxResult:
    start = time.monotonic()
    scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
    cg = None
    try:
        if check is None:
            Path(scratch, "main.py").write_text(code, encoding="utf-8")
        else:
            shutil.copyfile(HARNESS_SCRIPT, Path(scratch, "main.py"))
            Path(scratch, "candidate.py").write_text(code, encoding="utf-8")
        if sup.cgroup is not None:
            try:
                cg = RunCgroup(sup.cgroup, lim.max_processes + 1, (lim.memory_mb + 32) << 20)
            except OSError as exc:
                _report_once(f"could not create a cgroup for a run ({exc}); using rlimits only")
        return _run_in(lim, sup, scratch, cg, start, check)
    finally:
        if cg is not None:
            cg.kill_all()
            cg.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _pipes(checked: bool) -> tuple[dict[str, int], dict[str, int], list[int]]:
    """(fds for the supervisor, the runner's ends, the supervisor's ends to close after the start).

    The runner holds the only write end of the lifeline; if the runner dies, the supervisor sees
    EOF and kills the program. The status pipe is closed in the program before it starts, so only
    the supervisor writes it. In a checked run the program gets a request and a reply pipe.
    """
    status_r, status_w = os.pipe()
    lifeline_r, lifeline_w = os.pipe()
    child = {"status_fd": status_w, "lifeline_fd": lifeline_r}
    mine = {"status": status_r, "lifeline": lifeline_w}
    if checked:
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        os.set_blocking(request_w, False)
        child.update(request_fd=request_r, reply_fd=reply_w)
        mine.update(request=request_w, reply=reply_r)
    return child, mine, list(child.values())


def _run_in(lim: SandboxLimits, sup: SandboxSupport, scratch: str, cg: RunCgroup | None,
            start: float, check: Check | None) -> SandboxResult:
    child_fds, fds, to_close = _pipes(check is not None)
    cfg = _supervisor_config(lim, scratch, sup.namespaces, cg, child_fds)
    cmd = [cfg["python"], "-I", "-S", INIT_SCRIPT, repr(cfg)]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=tuple(to_close),
                                start_new_session=True,
                                env=cfg["env"], cwd=scratch, close_fds=True)
    except OSError as exc:
        for fd in fds.values():
            os.close(fd)
        return SandboxResult("sandbox_error", None, "", f"sandbox: could not start: {exc}",
                             time.monotonic() - start)
    finally:
        for fd in to_close:
            os.close(fd)
    collector = Collector(proc, fds["status"], start + lim.timeout_s, lim.max_output_bytes,
                          fds.get("reply"), fds.get("request"), lim.max_reply_bytes)
    checked, failure = None, None
    try:
        if check is not None:
            calls = Calls(collector)
            try:
                calls.loaded()
                checked = check(calls)
            except ProgramFailed as exc:
                failure = str(exc)
            if calls.failure is not None:  # also when the test code swallowed it
                checked, failure = None, calls.failure
        out = collector.finish(proc)
    finally:
        leftovers = _stop(proc, cg)
        collector.close()
        for name in ("status", "lifeline", "reply"):
            if name in fds:
                os.close(fds[name])
    stdout = out.stdout.decode("utf-8", errors="replace")
    stderr = out.stderr.decode("utf-8", errors="replace")
    started, report = parse_status(out.status)
    notes = tuple((report or {}).get("notes", []))
    for note in notes:
        _report_once(note)
    if leftovers:
        stderr += f"\nsandbox: processes {leftovers} did not exit within the teardown limit"
    if report and report.get("exec_error"):
        stderr += f"\nsandbox: could not start the program: {report['exec_error']}"
    status, rc = classify(report, out.timed_out, out.overflow, bool(cg and cg.oom_kills()),
                           cfg["limits"]["cpu"])
    if not started and status == "error":
        status = "sandbox_error"  # the supervisor never ran: the sandbox, not the program, failed
    active = tuple((report or {}).get("active", []))
    if cg is not None:
        active += ("cgroup-pids",) + (("cgroup-memory",) if cg.memory is not None else ())
    return SandboxResult(status, rc, stdout, stderr, time.monotonic() - start, out.overflow, active,
                         notes, checked, failure)


def _stop(proc: subprocess.Popen, cg: RunCgroup | None) -> list[int]:
    """Kill the run's process group (and cgroup) and wait until all of it is gone.

    Called before the leader is reaped, so its pid (= the group id) cannot have been reused.
    The PID namespace's init is waited for explicitly: the namespace is empty once it is gone.
    """
    tree = descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid, _ in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if cg is not None:
        cg.kill_all()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return wait_gone(tree, timeout_s=10)


def run_many(codes: list[str], *, timeout_s: float | None = None, memory_mb: int | None = None,
             limits: SandboxLimits | None = None, workers: int | None = None, progress: bool = True,
             desc: str = "sandbox", checks: list[Check] | None = None) -> list[SandboxResult]:
    """Run many programs concurrently; results in input order. `checks[i]`, if given, is the
    check of program i (see `run`).

    Each worker thread supervises one sandboxed process at a time, so `workers` programs run at
    once (default: the CPU count). The work happens in the child processes; the threads only wait
    on pipes, so a thread pool costs less than a process pool and needs no pickling or forking of
    a process that may hold a model.
    """
    from tqdm.auto import tqdm

    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    support((limits or SandboxLimits()).isolation)  # probe once, before the threads start
    if checks is not None and len(checks) != len(codes):
        raise ValueError(f"{len(codes)} programs but {len(checks)} checks")
    results: list[SandboxResult | None] = [None] * len(codes)
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(codes), desc=desc, disable=not progress) as bar:
        futures = {pool.submit(run, code, timeout_s=timeout_s, memory_mb=memory_mb, limits=limits,
                               check=checks[i] if checks else None): i
                   for i, code in enumerate(codes)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update(1)
    return results  # type: ignore[return-value]

