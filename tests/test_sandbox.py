"""Adversarial suite for reversalkit.tasks.sandbox: the runner never hangs or dies, every process
of a run is gone when `run` returns, and verdicts are right."""

import os
import signal
import socket
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from reversalkit.tasks import sandbox
from reversalkit.tasks.sandbox import SandboxLimits, run, run_many

SUPPORT = sandbox.support()
needs_ns = pytest.mark.skipif(not SUPPORT.namespaces, reason=f"no namespaces: {SUPPORT.namespace_reason}")


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if marker.encode() in cmdline and state not in (b"Z", b"X"):
                found.append(int(entry))
    return found


def _detached_sleeper(marker: str) -> str:
    """Program text: double-fork a session leader that execs a long sleep tagged with `marker`."""
    return textwrap.dedent(f"""
        import os, sys
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", {marker!r}])
            os._exit(0)
        os.wait()
    """)


def test_verdicts_ok_error_exit_codes():
    ok = run("print('hello')\n")
    assert (ok.status, ok.returncode, ok.stdout) == ("ok", 0, "hello\n")
    err = run("raise ValueError('boom')\n")
    assert err.status == "error" and err.returncode == 1 and "ValueError: boom" in err.stderr
    assert run("import sys; sys.exit(0)").status == "ok"
    exit3 = run("import sys; sys.exit(3)")
    assert (exit3.status, exit3.returncode) == ("error", 3)
    killed = run("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert (killed.status, killed.returncode) == ("error", -signal.SIGSEGV)


def test_stdin_closed_and_environment_scrubbed(monkeypatch):
    monkeypatch.setenv("RK_TEST_SECRET", "s3cret")
    res = run("import os, sys\nprint(repr(sys.stdin.read()))\nprint(sorted(os.environ))\nprint(os.getcwd())")
    lines = res.stdout.splitlines()
    assert res.status == "ok" and lines[0] == "''"
    assert "RK_TEST_SECRET" not in lines[1] and "s3cret" not in res.stdout
    if "minimal-root" in SUPPORT.layers:  # its own root: the scratch tmpfs is its /tmp
        assert lines[2] == "/tmp"
    else:
        tmp = os.path.realpath(os.environ.get("TMPDIR", "/tmp"))
        assert lines[2].startswith(os.path.join(tmp, "rk-sandbox-"))


def test_infinite_loop_times_out_and_returns():
    res = run("while True:\n    pass\n", timeout_s=1.0)
    assert res.status == "timeout" and res.returncode is None


def test_memory_bomb_is_stopped():
    # "memory" needs the cgroup's OOM count; without one the rlimit makes it the program's error
    expected = "memory" if SUPPORT.cgroup is not None and SUPPORT.cgroup.memory_parent else "error"
    res = run("x = bytearray(4 << 30)\n", memory_mb=256)
    assert res.status == expected, res
    grow = run("xs = []\nwhile True:\n    xs.append(bytearray(16 << 20))\n", memory_mb=256, timeout_s=10)
    assert grow.status == expected, grow


@pytest.mark.skipif(SUPPORT.cgroup is None, reason="per-run cgroups unavailable")
def test_memory_bomb_across_processes_hits_the_tree_limit():
    code = textwrap.dedent("""
        import os, time
        for _ in range(6):
            if os.fork() == 0:
                break
        block = bytearray(150 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(5)
    """)
    res = run(code, memory_mb=256, timeout_s=8)
    assert res.status == "memory", res


def test_fork_bomb_is_contained_and_cleaned_up():
    marker = f"rk-forkbomb-{uuid.uuid4().hex}"
    code = textwrap.dedent(f"""
        import os, sys
        os.execv(sys.executable, [sys.executable, "-c", '''
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        ''', {marker!r}])
    """)
    res = run(code, timeout_s=2.0)
    assert res.status in ("timeout", "error")
    assert _processes_with(marker) == []


def test_huge_output_is_capped():
    lim = SandboxLimits(max_output_bytes=10_000)
    res = run("import sys\nwhile True:\n    sys.stdout.write('x' * 4096)\n", limits=lim, timeout_s=10)
    assert res.status == "output_limit" and res.truncated
    assert len(res.stdout) == 10_000


def test_killing_its_parent_does_not_harm_the_runner():
    res = run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('still here')\n")
    assert res.status in ("ok", "error")  # ok inside a PID namespace, where the parent is immune
    if SUPPORT.namespaces:
        assert res.status == "ok" and res.stdout == "still here\n"
    group = run("import os, signal\nos.killpg(0, signal.SIGKILL)\n")
    assert group.status == "error"
    if SUPPORT.namespaces:  # its own session: only the program itself died
        assert group.returncode == -signal.SIGKILL
    assert run("print(1)").status == "ok"  # the runner is alive and still works


@needs_ns
def test_kill_everything_inside_namespace_is_harmless():
    code = textwrap.dedent("""
        import os, signal, time
        if os.fork() == 0:
            time.sleep(30)
        try:
            os.kill(-1, signal.SIGKILL)  # everything the program may signal: here, its own child
        except ProcessLookupError:
            pass
        print(os.wait()[1] & 0x7F)
    """)
    res = run(code)
    assert res.status == "ok" and res.stdout == f"{int(signal.SIGKILL)}\n"


def test_closing_fds():
    quiet = run("import os\nos.closerange(0, 1024)\nos._exit(0)\n")
    assert quiet.status == "ok"
    stuck = run("import os, time\nos.closerange(0, 1024)\ntime.sleep(60)\n", timeout_s=1.0)
    assert stuck.status == "timeout"


def test_detached_descendants_are_gone_when_run_returns():
    marker = f"rk-detached-{uuid.uuid4().hex}"
    res = run(_detached_sleeper(marker), timeout_s=5.0)
    assert res.status == "ok"
    assert _processes_with(marker) == []
    marker2 = f"rk-detached-{uuid.uuid4().hex}"
    res2 = run(_detached_sleeper(marker2) + "\nwhile True:\n    pass\n", timeout_s=1.0)
    assert res2.status == "timeout" and _processes_with(marker2) == []


def test_writes_stay_in_scratch(tmp_path):
    outside = tmp_path / f"escape-{uuid.uuid4().hex}.txt"
    code = textwrap.dedent(f"""
        open("inside.txt", "w").write("ok")
        print(open("inside.txt").read())
        open({str(outside)!r}, "w").write("escaped")
    """)
    res = run(code)
    assert res.stdout == "ok\n"  # the scratch directory is writable
    if not SUPPORT.namespaces:
        pytest.skip(f"no mount namespace on this machine: {SUPPORT.namespace_reason}")
    # How the write is refused depends on how the path looks from inside: a read-only bind of the
    # interpreter's prefix (EROFS), a directory nobody may enter (EACCES, e.g. pytest's 0700
    # basetemp under a nox venv) or no such path (ENOENT). What matters: it fails, nothing lands.
    refused = ("Read-only file system", "No such file or directory", "Permission denied")
    assert res.status == "error" and any(r in res.stderr for r in refused), res.stderr[-400:]
    assert not outside.exists()
    big = run("open('big.bin', 'wb').write(b'x' * (8 << 20))\n", limits=SandboxLimits(scratch_mb=2))
    assert big.status == "error"


def test_network_is_unreachable():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    try:
        res = run(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                  "s.sendall(b'hi')\n")
        if not SUPPORT.namespaces:
            pytest.skip("no network namespace on this machine")
        assert res.status == "error" and ("Errno" in res.stderr or "refused" in res.stderr)
        with pytest.raises(OSError):
            server.accept()  # nobody connected
    finally:
        server.close()


def test_isolation_reported_and_none_mode_still_limits():
    res = run("print(1)")
    assert res.isolation == SUPPORT.layers  # every run reports the layers that held for it
    if SUPPORT.namespaces:
        assert {"userns", "netns", "pidns", "mountns"} <= set(res.isolation)
    plain = SandboxLimits(isolation="none", timeout_s=1.0)
    assert run("print(2)", limits=plain).stdout == "2\n"
    assert run("while True:\n    pass\n", limits=plain).status == "timeout"
    marker = f"rk-detached-{uuid.uuid4().hex}"
    assert run(_detached_sleeper(marker), limits=plain).status == "ok"
    assert _processes_with(marker) == []


def test_run_many_in_order_from_threads():
    codes = [f"print({i})" if i % 3 else f"raise SystemExit({i % 7 + 1})" for i in range(9)]
    results = run_many(codes, workers=3, progress=False)
    for i, res in enumerate(results):
        if i % 3:
            assert (res.status, res.stdout) == ("ok", f"{i}\n")
        else:
            assert (res.status, res.returncode) == ("error", i % 7 + 1)
    assert threading.active_count() >= 1


def test_sandbox_failure_is_not_blamed_on_the_program():
    res = run("print(1)", limits=SandboxLimits(python="/nonexistent/python"))
    assert res.status == "sandbox_error" and res.returncode is None


def test_limits_validation():
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ValueError, match="isolation"):
        SandboxLimits(isolation="docker")


def test_program_dies_with_a_killed_runner(tmp_path):
    import subprocess
    import sys

    marker = f"rk-orphan-{uuid.uuid4().hex}"
    sleeper = "import time; time.sleep(600)"
    program = f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {sleeper!r}, {marker!r}])"
    script = tmp_path / "runner.py"
    script.write_text(f"from reversalkit.tasks.sandbox import run\nrun({program!r}, timeout_s=60)\n")
    runner = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.monotonic() + 30
        while not _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_with(marker), "the sandboxed program never started"
    finally:
        runner.kill()
        runner.wait()
    deadline = time.monotonic() + 10
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_with(marker) == []
    # What the killed runner could not clean up goes at the next probe.
    import tempfile

    from reversalkit.tasks.sandbox_cgroup import remove_stale

    left = list(Path(tempfile.gettempdir()).glob(f"rk-sandbox-{runner.pid}-*"))
    assert left
    sandbox._remove_stale_scratch()
    assert not any(d.exists() for d in left)
    if SUPPORT.cgroup is not None:  # a group can be removed once the kernel has let its last task go
        stale = lambda: list(SUPPORT.cgroup.pids_parent.glob(f"reversalkit-sandbox-{runner.pid}-*"))
        deadline = time.monotonic() + 10
        while True:
            remove_stale(SUPPORT.cgroup)
            if not stale() or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert not stale()
