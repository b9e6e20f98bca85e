"""Supervisor of one sandboxed program; `reversalkit.tasks.sandbox` runs this file as a script.

Run as `python -I -S sandbox_init.py '<json config>'`, either as PID 1 of fresh user/PID/mount/
network namespaces (under `unshare`) or, where those are unavailable, as a plain child. It uses
the standard library only, so it starts fast and imports nothing from the package. Steps:
join the run's cgroups; in namespaces, cap the namespace's PID count, make the whole file system
read-only and mount a size-limited tmpfs as the scratch directory; fork the program with rlimits,
no capabilities and no_new_privs; reap until the program exits; kill every remaining process; and
write JSON status lines (started; exit code, signal, notes) to a pipe the program never holds.
"""

import ctypes
import fcntl
import json
import os
import resource
import select
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
MS_NOSUID, MS_NODEV, MS_BIND, MS_REMOUNT = 2, 4, 4096, 32
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = -100, 0x8000, 1
SYS_MOUNT_SETATTR = 442  # same number on every architecture (new-syscall table)


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


LIBC = ctypes.CDLL(None, use_errno=True)


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _set_readonly(path, recursive, readonly):
    attr = MountAttr(MOUNT_ATTR_RDONLY if readonly else 0, 0 if readonly else MOUNT_ATTR_RDONLY, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    _check(LIBC.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), flags, ctypes.byref(attr),
                        ctypes.sizeof(attr)), f"mount_setattr {path}")


def _mount(source, target, fstype, flags, data):
    _check(LIBC.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                      data.encode() if data else None), f"mount {target}")


def setup_namespaces(cfg, notes, active):
    """Inside the new namespaces: PID cap, read-only root, tmpfs scratch (each best effort)."""
    scratch, size = cfg["scratch"], f"size={cfg['scratch_mb']}m,mode=0700"
    files = {}
    for name in os.listdir(scratch):
        with open(os.path.join(scratch, name), "rb") as f:
            files[name] = f.read()
    try:  # per-namespace pid_max (Linux >= 6.14); 301 is the kernel's minimum
        with open("/proc/sys/kernel/pid_max", "w") as f:
            f.write(str(cfg["pid_max"]))
        active.append("pid-max")
    except OSError as exc:
        notes.append(f"namespace pid cap unavailable ({exc.strerror})")
    try:
        _set_readonly("/", recursive=True, readonly=True)
        active.append("ro-root")
    except OSError as exc:
        notes.append(f"read-only file system view unavailable ({exc})")
    try:
        _mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, size)
        active.append("tmpfs-scratch")
    except OSError as exc:
        notes.append(f"tmpfs scratch unavailable ({exc}); using the host scratch directory")
        try:
            _mount(scratch, scratch, None, MS_BIND, None)
            _set_readonly(scratch, recursive=False, readonly=False)
        except OSError as exc2:
            notes.append(f"scratch bind mount failed ({exc2})")
    for shm in ("/dev/shm",):  # multiprocessing needs a writable /dev/shm
        try:
            _mount("tmpfs", shm, "tmpfs", MS_NOSUID | MS_NODEV, size.replace("0700", "1777"))
        except OSError:
            pass
    for name, data in files.items():
        with open(os.path.join(scratch, name), "wb") as f:
            f.write(data)


def exec_program(cfg):
    """In the forked child: limits, no privileges, then exec the interpreter on main.py."""
    try:
        lim = cfg["limits"]
        for name, value in (("RLIMIT_CORE", 0), ("RLIMIT_AS", lim["as"]), ("RLIMIT_FSIZE", lim["fsize"]),
                            ("RLIMIT_NOFILE", lim["nofile"]), ("RLIMIT_NPROC", lim["nproc"])):
            if value is not None:  # no address-space limit where a cgroup bounds resident memory
                resource.setrlimit(getattr(resource, name), (value, value))
        resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1))
        if cfg["ns"]:
            # Its own session: killpg(0) from the program cannot reach the supervisor or unshare.
            # (Without namespaces it stays in the supervisor's group, which the runner kills.)
            os.setsid()
            for cap in range(64):  # empty bounding set: exec as in-namespace root grants nothing
                if LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:
                    break
        _check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _program_fds(cfg)
        os.chdir(cfg["scratch"])
        os.execve(cfg["python"], [cfg["python"], "-I", "main.py"], cfg["env"])
    except BaseException as exc:  # noqa: BLE001 - report and leave; never return into the supervisor
        # On the status pipe, which closes at exec: the program itself can never write this.
        os.write(cfg["status_fd"], (json.dumps({"exec_error": str(exc)}) + "\n").encode())
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
    cfg = json.loads(sys.argv[1])
    status_fd = cfg["status_fd"]
    os.set_inheritable(status_fd, False)
    os.set_inheritable(cfg["lifeline_fd"], False)
    LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no /proc/<pid>/fd or ptrace into the supervisor
    os.write(status_fd, b'{"started": true}\n')  # tells the runner a missing report is not a start failure
    notes, active = [], []
    for procs in cfg["cgroups"]:
        try:
            with open(procs, "w") as f:
                f.write("0")
        except OSError as exc:
            notes.append(f"could not join cgroup {procs} ({exc.strerror})")
    if cfg["ns"]:
        setup_namespaces(cfg, notes, active)
    else:
        LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
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
    kill_rest(cfg["ns"])
    os.write(status_fd, (json.dumps(report) + "\n").encode())
    os._exit(0)


if __name__ == "__main__":
    main()
