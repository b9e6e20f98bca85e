"""The verdict of a sandboxed run from what the runner saw: the supervisor's status-pipe lines
(`parse_status`) and the status they add up to with the runner's clock, stream sizes and the
cgroup's OOM kills (`classify`). Nothing the program prints enters either."""

from __future__ import annotations

import ast
import signal


def parse_status(raw: bytes) -> tuple[bool, dict | None]:
    """(supervisor started, its final report or None) from the status pipe's lines."""
    lines = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        try:
            lines.append(ast.literal_eval(line))  # the supervisor writes repr()s of plain data
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue  # a line cut short by a killed supervisor
    started = any(isinstance(d, dict) and d.get("started") for d in lines)
    report = next((d for d in lines if isinstance(d, dict) and "rc" in d), None)
    exec_error = next((d["exec_error"] for d in lines if isinstance(d, dict) and "exec_error" in d), None)
    if exec_error is not None:  # the sandbox failed (the program's start or the supervisor itself)
        report = {"rc": None, "signal": None, **(report or {}), "exec_error": exec_error}
    program = next((d["program"] for d in lines if isinstance(d, dict) and "program" in d), None)
    if report is not None and isinstance(program, dict):  # the layers set up in the program's process
        report["active"] = report.get("active", []) + list(program.get("active", []))
        report["notes"] = report.get("notes", []) + list(program.get("notes", []))
    return started, report


def classify(report: dict | None, timed_out: bool, overflow: bool, oom: bool,
              cpu_limit_s: int) -> tuple[str, int | None]:
    """Status from what the runner saw: its clock, the stream sizes, the cgroup's OOM kills and the
    supervisor's report (exit status and CPU time from the kernel). The program's output plays no
    part, so printing "MemoryError" or the runner's messages changes nothing."""
    rc = None
    if report is not None:
        rc = report["rc"] if report["signal"] is None else -report["signal"]
    if report is not None and report.get("exec_error"):
        return "sandbox_error", rc
    if overflow:
        return "output_limit", rc
    # The CPU rlimit's signals count only with the kernel's CPU time to show for them (the
    # program may send itself SIGXCPU); 1% slack for how rusage rounds the scheduler's time.
    cpu_out = report is not None and (report.get("cpu_s") or 0) >= 0.99 * cpu_limit_s
    if timed_out or (cpu_out and rc in (-signal.SIGXCPU, -signal.SIGKILL)):
        return "timeout", rc
    if oom:
        return "memory", rc
    if report is None:
        return "error", rc
    return ("ok" if rc == 0 else "error"), rc
