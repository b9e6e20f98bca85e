"""Escapes from the issue, tried from inside the sandbox: host unix sockets (path and abstract),
host FIFOs, root-only files, /dev/kmsg and other devices, the checkout and home directories, and a
concurrent run's scratch. Each attack is first shown to work with isolation='none' (so the test
can fail), then to fail under the layers this machine has; a layer the machine lacks is skipped
with the reason the sandbox reported for it."""

import os
import socket
import stat
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from reversalkit.tasks import sandbox
from reversalkit.tasks.sandbox import SandboxLimits, run, run_many

SUPPORT = sandbox.support()
NONE = SandboxLimits(isolation="none", timeout_s=10.0)
LIMITS = SandboxLimits(timeout_s=10.0)


def needs(layer):
    return pytest.mark.skipif(layer not in SUPPORT.layers,
                              reason=f"layer {layer!r} does not hold here: {SUPPORT.namespace_reason}")


def attempt(code, limits=LIMITS):
    """The program prints 'ESCAPED' if the attack worked, else the error it hit."""
    body = textwrap.indent(textwrap.dedent(code), "    ")
    return run(f"try:\n{body}\n    print('ESCAPED')\nexcept Exception as e:\n    print(repr(e))\n",
               limits=limits)


@pytest.fixture
def host_socket():
    path = f"/tmp/rk-test-{uuid.uuid4().hex}.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen(4)
    server.settimeout(0.1)
    yield path, server
    server.close()
    os.unlink(path)


def _accepted(server):
    try:
        server.accept()[0].close()
        return True
    except OSError:
        return False


@needs("minimal-root")
def test_host_unix_socket_is_unreachable(host_socket):
    path, server = host_socket
    code = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({path!r})\ns.sendall(b'id\\n')"
    assert attempt(code, NONE).stdout == "ESCAPED\n" and _accepted(server)
    res = attempt(code)
    assert res.status == "ok" and "ESCAPED" not in res.stdout, res
    assert not _accepted(server)


@needs("netns")
def test_host_abstract_socket_is_unreachable():
    name = f"\0rk-test-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX)
    server.bind(name)
    server.listen(4)
    server.settimeout(0.1)
    try:
        code = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({name!r})"
        assert attempt(code, NONE).stdout == "ESCAPED\n" and _accepted(server)
        assert "ESCAPED" not in attempt(code).stdout
        assert not _accepted(server)
    finally:
        server.close()


@needs("minimal-root")
def test_host_fifo_is_unreachable():
    path = f"/tmp/rk-test-{uuid.uuid4().hex}.fifo"
    os.mkfifo(path, 0o666)
    os.chmod(path, 0o666)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        code = f"import os\nfd = os.open({path!r}, os.O_WRONLY | os.O_NONBLOCK)\nos.write(fd, b'x')"
        assert attempt(code, NONE).stdout == "ESCAPED\n" and os.read(reader, 16) == b"x"
        assert "ESCAPED" not in attempt(code).stdout
        assert os.read(reader, 16) == b""  # no writer left and nothing written
    finally:
        os.close(reader)
        os.unlink(path)


@needs("minimal-root")
def test_root_only_files_checkout_and_homes_are_out_of_view(tmp_path):
    secret = tmp_path / "root-only.txt"
    secret.write_text("secret")
    secret.chmod(0o600)
    checkout = str(Path(__file__).resolve())
    code = f"print(open({str(secret)!r}).read() + open({checkout!r}).read()[:0])"
    assert attempt(code, NONE).stdout == "secret\nESCAPED\n"
    assert "ESCAPED" not in attempt(code).stdout
    hidden = ["/etc/shadow", "/home", "/var", "/run", "/root/.bashrc", checkout]
    package = str(Path(sandbox.__file__).parent)
    # An installed (non-editable) reversalkit lives in the interpreter's site-packages, which the
    # program sees read-only because its own imports need it; a checkout never is in view.
    if not package.startswith(sys.prefix):
        hidden.append(package)
    for path in hidden:
        res = attempt(f"os.stat({path!r})".replace("os.", "__import__('os')."))
        assert "ESCAPED" not in res.stdout and "FileNotFoundError" in res.stdout, (path, res)
    listing = run("import os\nprint(sorted(os.listdir('/tmp')))\n", limits=LIMITS)
    assert listing.stdout == "['main.py']\n"  # the scratch holds the program and nothing of the host's


@needs("minimal-dev")
def test_only_harmless_devices():
    res = run("import os\nprint(sorted(os.listdir('/dev')))\n", limits=LIMITS)
    assert res.stdout == "['fd', 'full', 'null', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'urandom', " \
                         "'zero']\n"
    if os.path.exists("/dev/kmsg") and stat.S_ISCHR(os.stat("/dev/kmsg").st_mode) and os.geteuid() == 0:
        assert attempt("open('/dev/kmsg', 'wb').close()", NONE).stdout == "ESCAPED\n"
    for dev in ("/dev/kmsg", "/dev/kvm", "/dev/fuse", "/dev/net/tun", "/dev/mem", "/dev/vda"):
        assert "ESCAPED" not in attempt(f"open({dev!r}, 'wb').close()").stdout
    works = run("import os\nopen('/dev/null', 'w').write('x')\nprint(len(os.urandom(4)))\n", limits=LIMITS)
    assert works.stdout == "4\n", works


@needs("uid-nobody")
def test_program_runs_as_nobody_without_capabilities():
    res = run("print(open('/proc/self/uid_map').read().split())\n"
              "print([l.split()[1] for l in open('/proc/self/status')\n"
              "       if l.startswith(('Cap', 'NoNewPrivs'))])", limits=LIMITS)
    uid_map, caps = res.stdout.splitlines()
    assert uid_map == "['0', '65534', '1']"
    assert caps == "['0000000000000000', '0000000000000000', '0000000000000000', '0000000000000000', " \
                   "'0000000000000000', '1']"
    # and as the host sees it
    marker = f"rk-uid-{uuid.uuid4().hex}"
    code = ("import os, sys\n"
            f"os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(30)', {marker!r}])")
    thread = threading.Thread(target=run, args=(code,), kwargs={"timeout_s": 4.0})
    thread.start()
    try:
        status = None
        deadline = time.monotonic() + 4
        while status is None and time.monotonic() < deadline:
            for entry in os.listdir("/proc"):
                try:
                    if entry.isdigit() and marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                        status = Path(f"/proc/{entry}/status").read_text()
                except OSError:
                    continue
            time.sleep(0.02)
        assert status is not None, "the program never started"
        fields = dict(line.split(":", 1) for line in status.splitlines())
        assert fields["Uid"].split() == ["65534"] * 4 and fields["Gid"].split() == ["65534"] * 4
        assert fields["Groups"].split() == [] and int(fields["CapEff"], 16) == 0
    finally:
        thread.join(timeout=30)


@needs("minimal-root")
def test_runs_cannot_see_each_other():
    tag = uuid.uuid4().hex
    writer = textwrap.dedent(f"""
        import time
        open('/tmp/secret-{tag}', 'w').write('candidate code and tokens')
        time.sleep(3)
    """)
    seeker = textwrap.dedent(f"""
        import glob, time
        found, deadline = [], time.monotonic() + 2.5
        while not found and time.monotonic() < deadline:
            for pattern in ('/tmp/secret-*', '/tmp/*/secret-*', '/dev/shm/**', '/proc/*/root/tmp/*',
                            '/proc/*/cwd/*'):
                found += [p for p in glob.glob(pattern, recursive=True) if p.endswith('{tag}')]
            time.sleep(0.05)
        print(found)
    """)
    plain = run_many([writer, seeker], limits=NONE, workers=2, progress=False)
    assert plain[1].stdout != "[]\n", plain  # without isolation the other run's scratch is found
    results = run_many([writer, seeker], limits=LIMITS, workers=2, progress=False)
    assert results[0].status == "ok" and results[1].stdout == "[]\n", results


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root runner can hand the program to nobody")
def test_without_namespaces_a_root_runner_still_drops_to_nobody(tmp_path):
    # what a host without user namespaces gets (support() found none): rlimits, the filter and
    # an unprivileged uid; the result says which layers held
    no_ns = sandbox.SandboxSupport(False, "simulated", SUPPORT.cgroup, SUPPORT.cgroup_reason)
    secret = tmp_path / "root-only.txt"
    secret.write_text("secret")
    secret.chmod(0o600)
    code = f"import os\nprint(os.getuid(), os.getgid(), os.getgroups())\nopen('out.txt', 'w').write('x')\n" \
           f"open({str(secret)!r}).read()"
    res = sandbox._run_once(code, LIMITS, no_ns, None)
    assert "userns" not in res.isolation and "minimal-root" not in res.isolation
    if "uid-nobody" not in res.isolation:  # e.g. a pyenv interpreter under /root (0700): said so
        assert res.stdout.startswith("0 0") and any("runs as root" in n for n in res.notes), res
        system = "/usr/bin/python3"  # the system interpreter, which nobody can reach
        if not os.path.exists(system):
            pytest.skip(res.notes[0])
        res = sandbox._run_once(code, LIMITS.replace(python=system), no_ns, None)
    assert res.stdout == "65534 65534 []\n" and "PermissionError" in res.stderr, res
    assert {"uid-nobody", "no-caps", "no-new-privs"} <= set(res.isolation)
