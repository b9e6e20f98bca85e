"""Per-run cgroups for the sandbox: a process-count and a memory bound on a program's whole tree.

Rlimits bound one process at a time, and RLIMIT_NPROC does not bind root at all, so where this
process may create cgroups (typically as root in a container; cgroup v1 `pids`/`memory`
hierarchies, or a v2 group whose parent delegates those controllers) each run gets its own group:
`pids.max` stops fork bombs, the memory limit stops a tree of processes from exhausting RAM, and
`procs()` lists every member so the runner can kill them all. Where that is not allowed,
`probe_layout()` says why and the sandbox relies on its other limits.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_counter = itertools.count()


@dataclass(frozen=True)
class CgroupLayout:
    """Where per-run groups are created: v1 = one parent per controller, v2 = a single parent."""

    version: int
    pids_parent: Path
    memory_parent: Path | None


def _own_cgroup_paths() -> dict[str, str]:
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            paths[c] = path
    return paths


def _layout() -> CgroupLayout:
    own = _own_cgroup_paths()
    if "pids" in own and (CGROUP_ROOT / "pids").is_dir():
        memory = CGROUP_ROOT / "memory" / own["memory"].lstrip("/") if "memory" in own else None
        return CgroupLayout(1, CGROUP_ROOT / "pids" / own["pids"].lstrip("/"), memory)
    if "" in own and (CGROUP_ROOT / "cgroup.controllers").is_file():
        parent = CGROUP_ROOT / own[""].lstrip("/")
        enabled = (parent / "cgroup.subtree_control").read_text().split()
        if "pids" not in enabled:
            raise OSError(f"cgroup v2 parent {parent} does not delegate the pids controller")
        return CgroupLayout(2, parent, parent if "memory" in enabled else None)
    raise OSError("no cgroup pids controller found under /sys/fs/cgroup")


class RunCgroup:
    """The cgroup(s) of one sandbox run: created with limits, emptied and removed by `close()`."""

    def __init__(self, layout: CgroupLayout, max_processes: int, memory_bytes: int):
        name = f"reversalkit-sandbox-{os.getpid()}-{next(_counter)}"
        self.layout = layout
        self.dirs: list[Path] = []
        try:
            pids = layout.pids_parent / name
            pids.mkdir()
            self.dirs.append(pids)
            (pids / "pids.max").write_text(str(max_processes))
            self.memory: Path | None = None
            if layout.memory_parent is not None:
                memory = layout.memory_parent / name
                if memory != pids:
                    memory.mkdir()
                    self.dirs.append(memory)
                limit_file = "memory.limit_in_bytes" if layout.version == 1 else "memory.max"
                (memory / limit_file).write_text(str(memory_bytes))
                if layout.version == 2 and (memory / "memory.swap.max").exists():
                    (memory / "memory.swap.max").write_text("0")
                self.memory = memory
        except OSError:
            self.close()
            raise

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def procs(self) -> list[int]:
        pids: set[int] = set()
        for d in self.dirs:
            try:
                pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return sorted(pids)

    def oom_kills(self) -> int:
        if self.memory is None:
            return 0
        name = "memory.oom_control" if self.layout.version == 1 else "memory.events"
        try:
            for line in (self.memory / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            pass
        return 0

    def kill_all(self, timeout_s: float = 5.0) -> bool:
        """SIGKILL every member until the group is empty; False if members remain at the deadline."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            members = self.procs()
            if not members:
                return True
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.002)
        return not self.procs()

    def close(self) -> None:
        for d in reversed(self.dirs):
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last members are still being torn down
                    time.sleep(0.005)
        self.dirs = []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(layout: CgroupLayout) -> None:
    """Remove empty per-run groups left by runners that were killed (their pid no longer exists)."""
    for parent in {layout.pids_parent, layout.memory_parent} - {None}:
        for d in parent.glob("reversalkit-sandbox-*-*"):
            match = re.fullmatch(r"reversalkit-sandbox-(\d+)-\d+", d.name)
            if match and not _pid_alive(int(match.group(1))):
                try:
                    d.rmdir()
                except OSError:
                    pass


def probe_layout() -> tuple[CgroupLayout | None, str | None]:
    """(layout, None) when per-run cgroups can be created here, else (None, reason)."""
    try:
        layout = _layout()
        RunCgroup(layout, 8, 64 << 20).close()
        remove_stale(layout)
        return layout, None
    except (OSError, ValueError, KeyError) as exc:
        return None, str(exc)
