"""The sandboxed program's syscall filter: a small classic-BPF seccomp program, built and installed
with the standard library (struct + ctypes), so nothing beyond the kernel is needed on a fresh
machine. `sandbox_init.py` installs it in the program's process just before exec.

Denied (EPERM) what graded code never needs and an attacker wants: new namespaces (`unshare`,
`setns`, `clone` with a namespace flag; `clone3`, whose flags a filter cannot read, answers ENOSYS
so that libc falls back to `clone`), the mount API, ptrace and its kin (process_vm_*, kcmp,
pidfd_getfd, process_madvise), bpf, perf_event_open, the key syscalls, userfaultfd, module and
kexec loading, io_uring (whose operations bypass seccomp), file handles, swap, reboot, acct,
syslog, chroot, quotactl, ioperm/iopl; and sockets (`socket`, `socketpair`) of any family but
AF_UNIX, AF_INET and AF_INET6 (EAFNOSUPPORT). Syscalls of another ABI (x32, i386 on x86-64) kill
the process. Architectures: x86-64 and aarch64; elsewhere `build()` raises and the layer is
reported missing.
"""

import ctypes
import errno
import os
import struct

# struct seccomp_data: nr (u32) at 0, arch (u32) at 4, args[6] (u64) from 16; both supported
# architectures are little-endian, so an argument's low 32 bits are at 16 + 8 * i.
NR, ARCH, ARG0 = 0, 4, 16
LD_W_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
RET_KILL_PROCESS, RET_ERRNO, RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
NAMESPACE_FLAGS = 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00020000
X32_SYSCALL_BIT = 0x40000000

DENIED = ("mount", "umount2", "pivot_root", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount",
          "fspick", "mount_setattr", "unshare", "setns", "ptrace", "process_vm_readv",
          "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise", "bpf", "perf_event_open",
          "keyctl", "add_key", "request_key", "userfaultfd", "init_module", "finit_module",
          "delete_module", "kexec_load", "kexec_file_load", "io_uring_setup", "io_uring_enter",
          "io_uring_register", "open_by_handle_at", "name_to_handle_at", "swapon", "swapoff", "reboot",
          "acct", "syslog", "chroot", "quotactl", "iopl", "ioperm")
_COMMON = {"open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
           "fspick": 433, "clone3": 435, "pidfd_getfd": 438, "process_madvise": 440,
           "mount_setattr": 442, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427}
SYSCALLS = {
    "x86_64": (0xC000003E, {**_COMMON, "mount": 165, "umount2": 166, "pivot_root": 155, "unshare": 272,
                            "setns": 308, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
                            "kcmp": 312, "bpf": 321, "perf_event_open": 298, "keyctl": 250, "add_key": 248,
                            "request_key": 249, "userfaultfd": 323, "init_module": 175, "finit_module": 313,
                            "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320,
                            "open_by_handle_at": 304, "name_to_handle_at": 303, "swapon": 167,
                            "swapoff": 168, "reboot": 169, "acct": 163, "syslog": 103, "chroot": 161,
                            "quotactl": 179, "iopl": 172, "ioperm": 173, "clone": 56, "socket": 41,
                            "socketpair": 53}),
    "aarch64": (0xC00000B7, {**_COMMON, "mount": 40, "umount2": 39, "pivot_root": 41, "unshare": 97,
                             "setns": 268, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
                             "kcmp": 272, "bpf": 280, "perf_event_open": 241, "keyctl": 219, "add_key": 217,
                             "request_key": 218, "userfaultfd": 282, "init_module": 105,
                             "finit_module": 273, "delete_module": 106, "kexec_load": 104,
                             "kexec_file_load": 294, "open_by_handle_at": 265, "name_to_handle_at": 264,
                             "swapon": 224, "swapoff": 225, "reboot": 142, "acct": 89, "syslog": 116,
                             "chroot": 51, "quotactl": 60, "clone": 220, "socket": 198, "socketpair": 199}),
}


def _op(code, k, jt=0, jf=0):
    return struct.pack("=HBBI", code, jt, jf, k)


def build(machine=None):
    """The filter for `machine` (default: this one) as packed `struct sock_filter`s."""
    machine = machine or os.uname().machine
    if machine not in SYSCALLS:
        raise OSError(f"no syscall table for {machine}")
    arch, nr = SYSCALLS[machine]
    deny = RET_ERRNO | errno.EPERM
    prog = [_op(LD_W_ABS, ARCH), _op(JEQ, arch, 1, 0), _op(RET, RET_KILL_PROCESS), _op(LD_W_ABS, NR)]
    if machine == "x86_64":
        prog += [_op(JGE, X32_SYSCALL_BIT, 0, 1), _op(RET, RET_KILL_PROCESS)]
    for name in DENIED:
        if name in nr:
            prog += [_op(JEQ, nr[name], 0, 1), _op(RET, deny)]
    prog += [_op(JEQ, nr["clone3"], 0, 1), _op(RET, RET_ERRNO | errno.ENOSYS)]
    prog += [_op(JEQ, nr["clone"], 0, 4), _op(LD_W_ABS, ARG0),  # clone(flags, ...)
             _op(JSET, NAMESPACE_FLAGS, 0, 1), _op(RET, deny), _op(RET, RET_ALLOW)]
    for name in ("socket", "socketpair"):  # socket(family, ...)
        prog += [_op(JEQ, nr[name], 0, 6), _op(LD_W_ABS, ARG0), _op(JEQ, AF_UNIX, 2, 0),
                 _op(JEQ, AF_INET, 1, 0), _op(JEQ, AF_INET6, 0, 1), _op(RET, RET_ALLOW),
                 _op(RET, RET_ERRNO | errno.EAFNOSUPPORT)]
    prog.append(_op(RET, RET_ALLOW))
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(program, libc):
    """Install `program` (from `build`) on this process; no_new_privs must already be set."""
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {os.strerror(err)}")
