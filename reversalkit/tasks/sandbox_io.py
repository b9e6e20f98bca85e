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


class Collector:
    """Drains a program's stdout/stderr (first `cap` bytes each), the supervisor's status pipe and,
    in a checked run, the reply pipe, while writing requests to the program's request pipe.

    `pump(done)` reads whatever arrives until `done()` holds, every stream has reached EOF, the
    deadline passes (`timed_out`) or an output stream exceeds `cap` (`overflow`).
    """

    def __init__(self, proc: subprocess.Popen, status_fd: int, deadline: float, cap: int,
                 reply_fd: int | None = None, request_fd: int | None = None, reply_cap: int = 1 << 20):
        self.out = CollectedOutput()
        self.deadline = deadline
        self.stdout_fd, self.stderr_fd, self.status_fd = proc.stdout.fileno(), proc.stderr.fileno(), status_fd
        self.reply_fd, self.request_fd = reply_fd, request_fd
        self.buffers = {fd: bytearray() for fd in (self.stdout_fd, self.stderr_fd, status_fd, reply_fd)
                        if fd is not None}
        self.caps = {self.stdout_fd: cap, self.stderr_fd: cap, status_fd: 1 << 16, reply_fd: reply_cap}
        self.seen = dict.fromkeys(self.buffers, 0)
        self.reply_overflow = False  # a reply line longer than `reply_cap`
        self.pending = b""  # request bytes not yet written
        self.sel = selectors.DefaultSelector()
        for fd in self.buffers:
            self.sel.register(fd, selectors.EVENT_READ)

    def send(self, data: bytes) -> None:
        """Queue `data` for the request pipe (written by `pump`, which never blocks on it)."""
        if self.request_fd is None:
            raise ValueError("this run has no request pipe")
        if not self.pending:
            self.sel.register(self.request_fd, selectors.EVENT_WRITE)
        self.pending += data

    def close_requests(self) -> None:
        """Close the request pipe (the program sees EOF there); unwritten requests are dropped."""
        self.pending = b""
        if self.request_fd is not None:
            if self.request_fd in self.sel.get_map():
                self.sel.unregister(self.request_fd)
            os.close(self.request_fd)
            self.request_fd = None

    def close(self) -> None:
        if self.sel.get_map() is not None:
            self.close_requests()
            self.sel.close()

    def reply_line(self) -> bytes | None:
        """Take one complete line from the reply pipe's buffer, if there is one."""
        buf = self.buffers[self.reply_fd]
        end = buf.find(b"\n")
        if end < 0:
            return None
        line = bytes(buf[:end])
        del buf[: end + 1]
        return line

    def reading(self) -> bool:
        return any(fd != self.request_fd for fd in self.sel.get_map())

    def reply_open(self) -> bool:
        return self.reply_fd in self.sel.get_map()

    def pump(self, done=lambda: False) -> None:
        out = self.out
        while self.reading() and not out.overflow and not done():
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                out.timed_out = True
                return
            for key, _ in self.sel.select(timeout=remaining):
                if key.fd == self.request_fd:
                    self._write_some()
                else:
                    self._read_some(key.fd)

    def _write_some(self) -> None:
        try:
            n = os.write(self.request_fd, self.pending[: 1 << 16])
        except BrokenPipeError:
            n = len(self.pending)  # the program is gone; its EOF on the reply pipe follows
        self.pending = self.pending[n:]
        if not self.pending:
            self.sel.unregister(self.request_fd)

    def _read_some(self, fd: int) -> None:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            self.sel.unregister(fd)
            return
        buf = self.buffers[fd]
        room = max(0, self.caps[fd] - len(buf))
        buf += chunk[:room]
        self.seen[fd] += len(chunk)
        self.reply_overflow |= fd == self.reply_fd and len(chunk) > room
        self.out.overflow |= fd in (self.stdout_fd, self.stderr_fd) and self.seen[fd] > self.caps[fd]

    def has_reply(self) -> bool:
        return self.reply_overflow or b"\n" in self.buffers[self.reply_fd]

    def finish(self, proc: subprocess.Popen) -> CollectedOutput:
        """Read to the end (or deadline/overflow), wait for the exit, and close the selector."""
        self.close_requests()
        self.pump()
        out = self.out
        if not out.timed_out and not out.overflow:
            out.timed_out = not wait_exit(proc.pid, self.deadline)
        self.close()
        out.stdout = bytes(self.buffers[self.stdout_fd])
        out.stderr = bytes(self.buffers[self.stderr_fd])
        out.status = bytes(self.buffers[self.status_fd])
        return out


def collect_output(proc: subprocess.Popen, status_fd: int, deadline: float, cap: int) -> CollectedOutput:
    """Read stdout/stderr (first `cap` bytes each) and the status pipe until all reach EOF and the
    process exits, the deadline passes (`timed_out`), or a stream exceeds `cap` (`overflow`)."""
    return Collector(proc, status_fd, deadline, cap).finish(proc)


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
