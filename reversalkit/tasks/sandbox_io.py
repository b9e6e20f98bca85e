"""Runner-side plumbing of the sandbox: draining a program's pipes under a deadline and an output
cap, listing a process tree from /proc, and waiting until a set of processes is gone."""

from __future__ import annotations

import dataclasses
import os
import selectors
import subprocess
import time


@dataclasses.dataclass
class CollectedOutput:
    stdout: bytes = b""
    stderr: bytes = b""
    status: bytes = b""
    timed_out: bool = False
    overflow: bool = False


def collect_output(proc: subprocess.Popen, status_fd: int, deadline: float, cap: int) -> CollectedOutput:
    """Read stdout/stderr (first `cap` bytes each) and the status pipe until all reach EOF and the
    process exits, the deadline passes (`timed_out`), or a stream exceeds `cap` (`overflow`)."""
    out = CollectedOutput()
    buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray(), status_fd: bytearray()}
    caps = {proc.stdout.fileno(): cap, proc.stderr.fileno(): cap, status_fd: 1 << 16}
    seen = dict.fromkeys(buffers, 0)
    with selectors.DefaultSelector() as sel:
        for fd in buffers:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map() and not out.overflow:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                out.timed_out = True
                break
            for key, _ in sel.select(timeout=remaining):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                buf = buffers[key.fd]
                buf += chunk[: max(0, caps[key.fd] - len(buf))]
                seen[key.fd] += len(chunk)
                out.overflow |= key.fd != status_fd and seen[key.fd] > caps[key.fd]
    if not out.timed_out and not out.overflow:
        out.timed_out = not wait_exit(proc.pid, deadline)
    out.stdout = bytes(buffers[proc.stdout.fileno()])
    out.stderr = bytes(buffers[proc.stderr.fileno()])
    out.status = bytes(buffers[status_fd])
    return out


def wait_exit(pid: int, deadline: float) -> bool:
    """Wait until child `pid` has exited, WITHOUT reaping it, so that its pid (and process group
    id) cannot be reused before the runner has killed the rest of its group. False at the deadline.
    """
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)


def _start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie process; None when gone/zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def descendants(root: int) -> list[tuple[int, int]]:
    """(pid, start time) of every live descendant of `root`, found through /proc children lists."""
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            for kid in kids:
                start = _start_time(kid)
                if start is not None:
                    found.append((kid, start))
                    stack.append(kid)
    return found


def wait_gone(procs: list[tuple[int, int]], timeout_s: float) -> list[int]:
    """Wait until each (pid, start time) has exited (zombie or reaped); return those still alive."""
    deadline = time.monotonic() + timeout_s
    pending = list(procs)
    while pending:
        pending = [(pid, st) for pid, st in pending if _start_time(pid) == st]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.002)
    return [pid for pid, _ in pending]
