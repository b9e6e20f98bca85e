"""The syscall filter: each class the issue names is refused inside the sandbox (and shown to work
with isolation='none' where the kernel would allow it, so the test can fail), while threads,
subprocesses, multiprocessing and unix/inet sockets keep working."""

import textwrap

import pytest

from reversalkit.tasks import sandbox, sandbox_seccomp
from reversalkit.tasks.sandbox import SandboxLimits, run

SUPPORT = sandbox.support()
needs_seccomp = pytest.mark.skipif("seccomp" not in SUPPORT.layers,
                                   reason="the syscall filter does not hold on this machine")
NONE = SandboxLimits(isolation="none")
PRELUDE = textwrap.dedent("""
    import ctypes, os, socket
    libc = ctypes.CDLL(None, use_errno=True)
    def sys_(*args):
        r = libc.syscall(*[ctypes.c_long(a) for a in args])
        return 'ok' if r >= 0 else os.strerror(ctypes.get_errno())
""")
NR = sandbox_seccomp.SYSCALLS.get(__import__("os").uname().machine, (0, {}))[1]

# (name, program line printing 'ok' when the call went through); the first group is allowed by
# the kernel to an unprivileged process, so only the filter stops it
UNPRIVILEGED = [
    ("nested user namespace", "print(sys_(NR['unshare'], 0x10000000))"),
    ("ptrace", "print(sys_(NR['ptrace'], 0, 0, 0, 0))"),  # PTRACE_TRACEME
    ("keyctl", "print(sys_(NR['keyctl'], 0, -3, 1))"),  # KEYCTL_GET_KEYRING_ID of the session keyring
    ("netlink socket", "socket.socket(16, socket.SOCK_RAW); print('ok')"),
]
PRIVILEGED = [
    ("mount", "print(sys_(NR['mount'], 0, 0, 0, 0, 0))"),
    ("bpf", "print(sys_(NR['bpf'], 5, 0, 0))"),
    ("perf_event_open", "print(sys_(NR['perf_event_open'], 0, 0, -1, -1, 0))"),
    ("userfaultfd", "print(sys_(NR['userfaultfd'], 1))"),
    ("init_module", "print(sys_(NR['init_module'], 0, 0, 0))"),
    ("kexec_load", "print(sys_(NR['kexec_load'], 0, 0, 0, 0))"),
    ("setns", "print(sys_(NR['setns'], 0, 0))"),
    ("io_uring_setup", "print(sys_(NR['io_uring_setup'], 1, 0))"),
    ("vsock socket", "socket.socket(40, socket.SOCK_STREAM); print('ok')"),
    ("packet socket", "socket.socket(17, socket.SOCK_RAW); print('ok')"),
]


def attempt(line, limits=None):
    code = f"{PRELUDE}NR = {NR!r}\ntry:\n    {line}\nexcept OSError as e:\n    print(e.strerror)\n"
    return run(code, limits=limits)


@needs_seccomp
@pytest.mark.parametrize("name,line", UNPRIVILEGED, ids=[n for n, _ in UNPRIVILEGED])
def test_filter_stops_what_the_kernel_allows(name, line):
    assert attempt(line, NONE).stdout == "ok\n"
    res = attempt(line)
    assert res.status == "ok" and res.stdout in ("Operation not permitted\n",
                                                 "Address family not supported by protocol\n"), res


@needs_seccomp
@pytest.mark.parametrize("name,line", PRIVILEGED, ids=[n for n, _ in PRIVILEGED])
def test_filter_refuses_privileged_calls(name, line):
    res = attempt(line)
    assert res.status == "ok" and res.stdout in ("Operation not permitted\n",
                                                 "Address family not supported by protocol\n"), res


@needs_seccomp
def test_honest_programs_keep_working():
    code = textwrap.dedent("""
        import multiprocessing, socket, subprocess, sys, threading
        out = []
        t = threading.Thread(target=out.append, args=('thread',))
        t.start(); t.join()
        child = subprocess.run([sys.executable, '-c', 'print(7)'], capture_output=True)
        out.append(child.stdout.decode().strip())
        a, b = socket.socketpair()
        a.send(b'x')
        out.append(b.recv(1).decode())
        socket.socket(socket.AF_INET).close(); socket.socket(socket.AF_INET6).close()
        with multiprocessing.Pool(2) as pool:
            out.append(sum(pool.map(abs, [-1, -2])))
        print(out)
    """)
    res = run(code)
    assert (res.status, res.stdout) == ("ok", "['thread', '7', 'x', 3]\n"), res


def test_filter_shape():
    for machine in sandbox_seccomp.SYSCALLS:
        prog = sandbox_seccomp.build(machine)
        assert len(prog) % 8 == 0 and len(prog) // 8 < 4096
    with pytest.raises(OSError, match="no syscall table"):
        sandbox_seccomp.build("sparc64")
