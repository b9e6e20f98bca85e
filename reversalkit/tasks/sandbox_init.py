"""Supervisor of one sandboxed program; `reversalkit.tasks.sandbox` runs this file as a script.

Run as `python -I -S sandbox_init.py '<config>'`. Standard library only (and its sibling
`sandbox_ns.py`), so it starts fast. Steps: join the run's cgroups; where `cfg["ns"]`, enter new
namespaces under an unprivileged identity and build the program's own root (`sandbox_ns`),
carrying on as the PID namespace's init, with a per-namespace PID cap; fork the program with
rlimits, no capabilities and no_new_privs; reap until the program exits; kill every remaining
process; and write status lines (started; exit code, signal, CPU time, the layers that held,
notes) to a pipe the program never holds. The config and the status lines are Python literals
(`repr`), not JSON: importing json would cost the supervisor's start about 12 ms, a tenth of a
run.
"""

import _signal as signal  # the C module: `signal` imports enum, ~8 ms of every run
import ctypes
import fcntl
import os
import resource
import select
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sandbox_ns  # noqa: E402 - sibling files; -I keeps the script's directory off sys.path
import sandbox_seccomp  # noqa: E402

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
LIBC = sandbox_ns.LIBC


def _status(fd, message):
    os.write(fd, (repr(message) + "\n").encode())


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _scratch_files(scratch):
    files = {}
    for name in os.listdir(scratch):
        with open(os.path.join(scratch, name), "rb") as f:
            files[name] = f.read()
    return files


def _others_can_reach(path):
    """Whether every directory down to `path` lets other users through (o+x)."""
    parts = os.path.realpath(path).split("/")
    return all(os.stat("/".join(parts[:i]) or "/").st_mode & 0o001 for i in range(1, len(parts) + 1))


def _hand_scratch_to_nobody(cfg):
    """Without a user namespace a root runner still runs the program as nobody: its scratch
    becomes nobody's, and RLIMIT_NPROC (which then counts all of nobody's processes) is raised
    by their current number."""
    uid = sandbox_ns.NOBODY
    for name in [""] + os.listdir(cfg["scratch"]):
        os.chown(os.path.join(cfg["scratch"], name), uid, uid)
    count = 0
    for entry in os.listdir("/proc"):
        try:
            count += entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid
        except OSError:
            pass
    cfg["uid"] = uid
    cfg["limits"]["nproc"] = cfg["max_processes"] + count


def prepare_view(cfg, files, sources, notes, active):
    """In the new namespaces: the program's own root (or, where that fails, the host's files
    read-only with a tmpfs scratch) holding `files`, then the namespace's PID cap."""
    try:
        sandbox_ns.build_root(cfg, files, sources, active)
        cfg["workdir"] = "/tmp"
        cfg["env"].update(HOME="/tmp", TMPDIR="/tmp")
    except OSError as exc:
        notes.append(f"the program's own root could not be built ({exc}); it sees the host's files "
                     "read-only, host sockets, FIFOs and devices included")
        _host_view(cfg, files, notes, active)
    try:  # per-namespace pid_max (Linux >= 6.14); 301 is the kernel's minimum
        with open("/proc/sys/kernel/pid_max", "w") as f:
            f.write(str(cfg["pid_max"]))
        active.append("pid-max")
    except OSError as exc:
        notes.append(f"namespace pid cap unavailable ({exc.strerror})")


def _host_view(cfg, files, notes, active):
    scratch, size = cfg["scratch"], f"size={cfg['scratch_mb']}m,mode=0700"
    for what, step in (
            ("ro-root", lambda: sandbox_ns.set_readonly("/")),
            ("proc", lambda: sandbox_ns.mount("proc", "/proc", "proc", sandbox_ns.MS_NOSUID)),
            ("tmpfs-scratch", lambda: sandbox_ns.mount("tmpfs", scratch, "tmpfs",
                                                       sandbox_ns.MS_NOSUID | sandbox_ns.MS_NODEV, size))):
        try:
            step()
            active.append(what)
        except OSError as exc:
            notes.append(f"{what} unavailable ({exc})")
    for name, data in files.items():
        with open(os.path.join(scratch, name), "wb") as f:
            f.write(data)


def exec_program(cfg):
    """In the forked child: limits, no privileges, the syscall filter, then exec the interpreter on
    main.py. The layers that held go on the status pipe, which closes at exec."""
    try:
        # the status pipe above 9, where moving the program's pipes to fds 3 and 4 cannot clobber it
        cfg["status_fd"] = fcntl.fcntl(cfg["status_fd"], fcntl.F_DUPFD_CLOEXEC, 10)
        lim, active, notes = cfg["limits"], [], []
        for name, value in (("RLIMIT_CORE", 0), ("RLIMIT_AS", lim["as"]), ("RLIMIT_FSIZE", lim["fsize"]),
                            ("RLIMIT_NOFILE", lim["nofile"]), ("RLIMIT_NPROC", lim["nproc"])):
            if value is not None:  # no address-space limit where a cgroup bounds resident memory
                resource.setrlimit(getattr(resource, name), (value, value))
        resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1))
        if cfg["in_ns"]:
            # Its own session: killpg(0) from the program cannot reach the supervisor.
            # (Without namespaces it stays in the supervisor's group, which the runner kills.)
            os.setsid()
            for cap in range(64):  # empty bounding set: exec as in-namespace root grants nothing
                if LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:
                    break
            active.append("no-caps")
        if cfg.get("uid") is not None:  # set by _hand_scratch_to_nobody; drops every capability
            os.setgroups([])
            os.setresgid(cfg["uid"], cfg["uid"], cfg["uid"])
            os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
            active += ["uid-nobody", "no-caps"]
        _check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        active.append("no-new-privs")
        if cfg["seccomp"]:
            try:
                sandbox_seccomp.install(sandbox_seccomp.build(), LIBC)
                active.append("seccomp")
            except OSError as exc:
                notes.append(f"syscall filter unavailable ({exc}); new namespaces, ptrace, bpf, "
                             "keyctl, userfaultfd and other socket families are not blocked")
        _program_fds(cfg)
        os.chdir(cfg["workdir"])
        layers = {"program": {"active": active, "notes": notes}}
        _status(cfg["status_fd"], layers)
        os.execve(cfg["python"], [cfg["python"], "-I", "main.py"], cfg["env"])
    except BaseException as exc:  # noqa: BLE001 - report and leave; never return into the supervisor
        # On the status pipe, which closes at exec: the program itself can never write this.
        _status(cfg["status_fd"], {"exec_error": str(exc)})
    os._exit(126)


def _program_fds(cfg):
    """A checked run's request and reply pipes become the program's fds 3 and 4."""
    if "request_fd" not in cfg:
        return
    originals = (cfg["request_fd"], cfg["reply_fd"])
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in originals]  # dup2 clobbers neither
    for fd in originals:
        os.close(fd)
    for target, fd in zip((3, 4), moved):
        os.dup2(fd, target)  # inheritable
        os.close(fd)


def _children(pid):
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return kids


def kill_rest(in_pid_namespace):
    """Kill every process left after the program exited, and reap them all."""
    for _ in range(1000):
        if in_pid_namespace:
            try:
                os.kill(-1, signal.SIGKILL)  # as PID 1: every other process of the namespace
            except ProcessLookupError:
                pass
        else:  # subreaper: orphans were reparented to us; kill whole subtrees
            stack = _children(os.getpid())
            while stack:
                pid = stack.pop()
                stack += _children(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def wait_program(child, lifeline, wake, report):
    """Reap children until the program exits (its status goes into `report`) or the runner dies."""
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == child:
            report["cpu_s"] = usage.ru_utime + usage.ru_stime  # the kernel's count, not the program's
            if os.WIFSIGNALED(status):
                report["signal"] = os.WTERMSIG(status)
            else:
                report["rc"] = os.WEXITSTATUS(status)
            return
        if pid:
            continue  # reaped an orphan; look again before sleeping
        ready = select.select([lifeline, wake], [], [])[0]
        if lifeline in ready and not os.read(lifeline, 1):
            report["notes"].append("runner gone")
            return
        if wake in ready:
            os.read(wake, 512)


def main():
    cfg = eval(sys.argv[1], {"__builtins__": {}})  # the runner's own repr() of plain data
    try:
        supervise(cfg)
    except BaseException as exc:  # noqa: BLE001 - the sandbox failed, not the program: say so
        _status(cfg["status_fd"], {"exec_error": f"supervisor: {exc!r}"})
        os._exit(125)


def supervise(cfg):
    status_fd = cfg["status_fd"]
    os.set_inheritable(status_fd, False)
    os.set_inheritable(cfg["lifeline_fd"], False)
    LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no /proc/<pid>/fd or ptrace into the supervisor
    _status(status_fd, {"started": True})  # tells the runner a missing report is not a start failure
    notes, active = [], []
    for procs in cfg["cgroups"]:
        try:
            with open(procs, "w") as f:
                f.write("0")
        except OSError as exc:
            notes.append(f"could not join cgroup {procs} ({exc.strerror})")
    cfg["workdir"] = cfg["scratch"]
    # Read while still the runner's user: in the namespace the scratch directory is not ours.
    files = _scratch_files(cfg["scratch"]) if cfg["ns"] else {}
    sources = sandbox_ns.open_sources() if cfg["ns"] else {}
    cfg["in_ns"] = bool(cfg["ns"]) and sandbox_ns.enter(cfg, notes, active)
    if cfg["in_ns"]:
        prepare_view(cfg, files, sources, notes, active)
    for fd, _, _ in sources.values():
        if fd is not None:
            os.close(fd)
    if not cfg["in_ns"]:
        LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if cfg["drop_uid"] and os.geteuid() == 0:
            hidden = [p for p in sandbox_ns.prefixes() if not _others_can_reach(p)]
            if hidden:
                notes.append(f"the program runs as root: nobody cannot reach the interpreter in {hidden[0]}")
            else:
                _hand_scratch_to_nobody(cfg)
    # SIGCHLD wakes a select() that also watches the lifeline: EOF there means the runner died,
    # and the program must not outlive it.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    child = os.fork()
    if child == 0:
        exec_program(cfg)
    for name in ("request_fd", "reply_fd"):  # only the program holds them: EOF when it is gone
        if name in cfg:
            os.close(cfg[name])
    report = {"rc": None, "signal": None, "cpu_s": None, "notes": notes, "active": active}
    wait_program(child, cfg["lifeline_fd"], wake_r, report)
    kill_rest(cfg["in_ns"])
    _status(status_fd, report)
    os._exit(0)


if __name__ == "__main__":
    main()
