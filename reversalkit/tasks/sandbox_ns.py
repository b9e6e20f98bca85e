"""Namespaces, identity and file system view of a sandboxed program (used by `sandbox_init.py`).

`enter()` puts the supervisor into new user, mount, PID, network, IPC, UTS and cgroup namespaces.
A helper left outside writes the user namespace's id maps: where the runner is root, in-namespace
root becomes host `nobody` (65534), a uid that owns nothing, so the program holds no host
privilege whoever runs the grader; elsewhere only the runner's own uid can be mapped, and that is
reported. `build_root()` then gives the program a root of its own, as bubblewrap's `--ro-bind`/
`--dev`/`--proc`/`--tmpfs` would: a tmpfs holding read-only binds of only what the interpreter
needs (/usr, the /lib and /bin links or directories, the interpreter's prefixes), a minimal /etc,
a /dev with null, zero, full, random and urandom, its own /proc, and a private size-limited tmpfs
at /tmp as the scratch directory; then pivot_root, and the old root is detached. No host /tmp,
/run, /var, /home, /root, checkout, socket, FIFO or device node is reachable, and each run's
scratch exists only in its own mount namespace. Standard library only.
"""

import ctypes
import os
import sys

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x2000000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
NAMESPACES = {"userns": CLONE_NEWUSER, "mountns": CLONE_NEWNS, "pidns": CLONE_NEWPID,
              "netns": CLONE_NEWNET, "ipcns": CLONE_NEWIPC, "utsns": CLONE_NEWUTS,
              "cgroupns": CLONE_NEWCGROUP}
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME = 1 << 18, 1 << 21
MNT_DETACH, AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE = 2, -100, 0x1000, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 1, 2, 4, 8
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC, MOVE_MOUNT_F_EMPTY_PATH = 1, 0o2000000, 4
# the same numbers on every architecture (the unified new-syscall table)
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
PR_SET_PDEATHSIG = 1
NOBODY = 65534
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
DEV_NODES = ("null", "zero", "full", "random", "urandom")
# statvfs flags a read-only remount must repeat: a user namespace may not clear them
_KEEP_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
               (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
               (os.ST_RELATIME, MS_RELATIME))

LIBC = ctypes.CDLL(None, use_errno=True)


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source, target, fstype=None, flags=0, data=None):
    _check(LIBC.mount(source.encode() if source else None, target.encode(),
                      fstype.encode() if fstype else None, flags, data.encode() if data else None),
           f"mount {target}")


def set_readonly(path, recursive=True):
    """Make the mount at `path` read-only (mount_setattr, Linux >= 5.12; else a remount)."""
    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    if LIBC.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), AT_RECURSIVE if recursive else 0,
                    ctypes.byref(attr), ctypes.sizeof(attr)) == 0:
        return
    keep = os.statvfs(path).f_flag
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | sum(ms for st, ms in _KEEP_FLAGS if keep & st)
    mount(None, path, None, flags)


def attach(source, target):
    """Mount `source` (from `open_sources`) at `target`, creating the mount point: a detached copy
    is moved there; a path is bound there and made read-only (not for device nodes)."""
    fd, is_dir, path = source
    if is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    if fd is not None:
        _check(LIBC.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH),
               f"move_mount {target}")
        return
    mount(path, target, None, MS_BIND | MS_REC)
    if not path.startswith("/dev/"):
        set_readonly(target)


def _write_id_maps(pid, uid, gid):
    for name, data in (("setgroups", "deny"), ("gid_map", f"0 {gid} 1"), ("uid_map", f"0 {uid} 1")):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(data)


def _map_helper(parent, go, done):
    """Outside the new user namespace: map its root to nobody (as root) or to the runner's uid."""
    os.close(done[0])
    if not os.read(go, 1):
        os._exit(3)  # the supervisor could not unshare
    code = 2
    for uid, gid, code_if_ok in ((NOBODY, NOBODY, 0), (os.geteuid(), os.getegid(), 1)):
        if code_if_ok == 0 and os.geteuid() != 0:
            continue
        try:
            _write_id_maps(parent, uid, gid)
            code = code_if_ok
            break
        except OSError:
            continue
    os._exit(code)


def enter(cfg, notes, active):
    """Move into new namespaces. Returns True in the namespace's init (pid 1), which carries on
    as the supervisor; the outer process only waits for it and never returns. Returns False, with
    a note, where no user namespace can be made (nothing has changed then)."""
    host_uid = os.geteuid()
    if host_uid == 0:
        os.setgroups([])  # host root's supplementary groups must not survive into the namespace
    go_r, go_w = os.pipe()
    done = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(go_w)
        _map_helper(os.getppid(), go_r, done)
    os.close(go_r)
    os.close(done[1])
    flags = sum(NAMESPACES.values())
    if LIBC.unshare(flags) != 0:
        err = ctypes.get_errno()
        os.close(go_w)
        os.waitpid(helper, 0)
        notes.append(f"Linux namespaces are unavailable (unshare: {os.strerror(err)}); programs run "
                     "with rlimits, a process group and a scratch directory only")
        return False
    os.write(go_w, b"1")
    os.close(go_w)
    code = os.waitstatus_to_exitcode(os.waitpid(helper, 0)[1])
    if code not in (0, 1):
        raise OSError(f"could not write the user namespace's id maps (helper exit {code})")
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    active.extend(NAMESPACES)
    if code == 0:
        active.append("uid-nobody")
    else:
        notes.append(f"the program runs as the runner's own uid {host_uid} (only a runner started "
                     "as root can map it to nobody, a uid that owns nothing)")
    init = os.fork()  # the first child in the new PID namespace is its init
    if init == 0:
        LIBC.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
        return True
    for name in ("lifeline_fd", "request_fd", "reply_fd"):
        if name in cfg:
            os.close(cfg[name])
    os.waitpid(init, 0)
    os._exit(0)


def prefixes():
    """Directories the interpreter (this one: the supervisor runs the program's) needs besides /usr."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    venv = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
    if os.path.exists(os.path.join(venv, "pyvenv.cfg")):  # under -S, sys.prefix is not the venv yet
        paths.add(venv)
    keep = []
    for p in sorted((os.path.realpath(p) for p in paths), key=len):
        if p != "/" and not any(p == k or p.startswith(k + "/") for k in keep + list(SYSTEM_DIRS)):
            keep.append(p)
    return keep


def _detached_copy(path, attrs):
    """A detached, read-only copy of the mount tree at `path` (open_tree, Linux >= 5.12 with
    mount_setattr), or None where this process may not make one (not root)."""
    fd = LIBC.syscall(SYS_OPEN_TREE, AT_FDCWD, path.encode(),
                      OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)
    if fd < 0:
        return None
    attr = MountAttr(attrs, 0, 0, 0)
    if LIBC.syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr),
                    ctypes.sizeof(attr)) != 0:
        os.close(fd)
        return None
    return fd


def open_sources():
    """{path in the new root: (detached mount fd or None, is a directory)} of everything bound
    into it. Made before `enter()`, while still the runner's user: inside, nobody may not be able
    to reach them (a pyenv interpreter under /root), but a detached copy moves in without a path
    search. Where no copy can be made (a runner that is not root), None: the path is bound by name
    inside, as the runner's own uid, which can reach it."""
    wanted = [p for p in SYSTEM_DIRS if os.path.isdir(p) and not os.path.islink(p)] + prefixes()
    wanted += [f"/etc/{n}" for n in ("ld.so.cache", "ld.so.conf", "localtime") if os.path.exists(f"/etc/{n}")]
    wanted += [f"/dev/{n}" for n in DEV_NODES]
    sources = {}
    for path in wanted:
        real = os.path.realpath(path) if path.startswith("/etc/") else path
        # device nodes must stay openable (no nodev) and writable (/dev/null): a read-only mount
        # does not stop writes to a device, only changes to the node
        attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | (MOUNT_ATTR_NOEXEC if path.startswith("/dev/")
                                                        else MOUNT_ATTR_NODEV)
        sources[path] = (_detached_copy(real, attrs), os.path.isdir(real), real)
    return sources


def build_root(cfg, files, sources, active):
    """Assemble the new root on a tmpfs at the host scratch path and pivot into it: `sources` from
    `open_sources()`, the program's scratch at /tmp holding `files` (name -> bytes)."""
    root = cfg["scratch"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here propagates to the host
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            os.symlink(os.readlink(path), root + path)
    for path, source in sources.items():
        if not path.startswith("/dev/"):
            attach(source, root + path)
    os.makedirs(f"{root}/etc", exist_ok=True)
    with open(f"{root}/etc/passwd", "w") as f:
        f.write("root:x:0:0:sandbox:/tmp:/sbin/nologin\n")
    with open(f"{root}/etc/group", "w") as f:
        f.write("root:x:0:\n")
    _build_dev(root, cfg["scratch_mb"], sources)
    scratch = root + "/tmp"
    os.mkdir(scratch)
    mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['scratch_mb']}m,mode=0700")
    for name, data in files.items():
        with open(f"{scratch}/{name}", "wb") as f:
            f.write(data)
    os.mkdir(root + "/proc")
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    set_readonly(root + "/dev", recursive=False)
    _pivot(root)
    set_readonly("/", recursive=False)  # /tmp and /dev/shm stay writable
    active += ["minimal-root", "minimal-dev", "proc", "tmpfs-scratch"]


def _build_dev(root, size_mb, sources):
    dev = root + "/dev"
    os.mkdir(dev)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755")
    for node in DEV_NODES:
        attach(sources["/dev/" + node], f"{dev}/{node}")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(dev + "/shm")  # multiprocessing's semaphores and shared memory
    mount("tmpfs", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"size={size_mb}m,mode=1777")


def _pivot(root):
    """pivot_root(root, root): the old root ends up stacked under the new one and is detached."""
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(f"pivot_root: syscall number unknown on {os.uname().machine}")
    os.chdir(root)
    _check(LIBC.syscall(number, b".", b"."), "pivot_root")
    _check(LIBC.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
