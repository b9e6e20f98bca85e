"""Status comes from the runner: its clock, the stream sizes, the cgroup's OOM kills and the
supervisor's report on a pipe the program never holds. What the program prints or how it exits
cannot make a run look like a memory failure, a timeout or a sandbox failure."""

import textwrap

import pytest

from reversalkit.tasks import sandbox
from reversalkit.tasks.sandbox import SandboxLimits, run
from reversalkit.tasks.sandbox_status import classify, parse_status

SUPPORT = sandbox.support()
CGROUP_MEMORY = SUPPORT.cgroup is not None and SUPPORT.cgroup.memory_parent is not None
needs_cgroup_memory = pytest.mark.skipif(not CGROUP_MEMORY, reason="no per-run memory cgroup here")


def test_printing_memory_error_does_not_make_it_memory():
    res = run("import sys\nprint('done')\nsys.stderr.write('MemoryError\\n')\n")
    assert (res.status, res.returncode) == ("ok", 0)
    fails = run("import sys\nsys.stderr.write('MemoryError: out of memory\\n')\nsys.exit(1)\n")
    assert (fails.status, fails.returncode) == ("error", 1)


def test_faking_the_runners_start_failure_is_an_error():
    res = run("import os, sys\nsys.stderr.write('sandbox: could not start the program: x\\n')\n"
              "sys.stderr.flush()\nos._exit(126)\n")
    assert (res.status, res.returncode) == ("error", 126)


def test_a_real_start_failure_is_a_sandbox_error():
    res = run("print(1)", limits=SandboxLimits(python="/nonexistent/python"))
    assert res.status == "sandbox_error"


def test_self_sent_cpu_limit_signal_is_not_a_timeout():
    res = run("import os, signal\nsignal.signal(signal.SIGXCPU, signal.SIG_DFL)\n"
              "os.kill(os.getpid(), signal.SIGXCPU)\n")
    assert res.status == "error" and res.returncode == -int(__import__("signal").SIGXCPU)


def test_cpu_limit_is_a_timeout():
    # CPU time outruns the wall clock with threads; the kernel's count proves the limit was hit
    code = textwrap.dedent("""
        import signal, threading
        signal.signal(signal.SIGXCPU, signal.SIG_DFL)
        def spin():
            while True:
                pass
        for _ in range(3):
            threading.Thread(target=spin, daemon=True).start()
        spin()
    """)
    res = run(code, timeout_s=1.0)
    assert res.status == "timeout"


@needs_cgroup_memory
def test_threads_fit_when_memory_is_resident():
    code = textwrap.dedent("""
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(8) as pool:
            print(sum(pool.map(lambda x: x * x, range(100))))
    """)
    res = run(code, memory_mb=256)
    assert (res.status, res.stdout) == ("ok", "328350\n"), res
    assert "cgroup-memory" in res.isolation


@needs_cgroup_memory
def test_memory_status_from_the_cgroup():
    res = run("x = bytearray(1 << 30)\n", memory_mb=128)
    assert res.status == "memory", res
    numpy = run("import numpy as np\nx = np.ones(1 << 27)\nprint(x.sum())\n", memory_mb=128)
    assert numpy.status == "memory", numpy


def test_without_a_memory_cgroup_the_address_space_limit_holds():
    # isolation='none' is the no-cgroup fallback: the rlimit stops it; the program's MemoryError
    # is only its own text, so the runner calls it an error
    res = run("x = bytearray(4 << 30)\n", memory_mb=256, limits=SandboxLimits(isolation="none"))
    assert res.status == "error" and "MemoryError" in res.stderr and "cgroup-memory" not in res.isolation


def test_a_supervisor_failure_is_a_sandbox_error():
    # what the supervisor writes when it fails after starting (here: a failed namespace setup)
    raw = repr({"started": True}).encode() + b"\n" + repr({"exec_error": "supervisor: OSError()"}).encode()
    started, report = parse_status(raw + b"\n")
    assert started and report["exec_error"] == "supervisor: OSError()"
    assert classify(report, False, False, False, 6) == ("sandbox_error", None)
    # a garbled or missing report is the program's failure only if the supervisor never failed
    assert parse_status(b"{'started': True}\n{'rc': 0, 'sig")[1] is None
