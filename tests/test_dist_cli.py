"""`reversalkit study --nproc N` relaunches the same command under torchrun, and `python -m reversalkit`
(what `torchrun -m reversalkit` runs on each rank) is the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reversalkit import cli


def test_nproc_relaunches_the_command_under_torchrun(monkeypatch, tmp_path):
    calls = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    argv = ["-q", "study", "--preset", "tiny", "--nproc", "2", "--set", "iterations=2",
            "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    (cmd,) = calls
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert cmd[5:] == ["-m", "reversalkit", "-q", "study", "--preset", "tiny", "--set", "iterations=2",
                       "--out", str(tmp_path)]
    calls.clear()
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 1)
    assert cli.main(["study", "--preset", "tiny", "--nproc=3", "--out", str(tmp_path)]) == 1
    assert calls[0][4] == "--nproc-per-node=3" and "--nproc=3" not in calls[0]


def test_nproc_inside_torchrun_or_below_one_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(subprocess, "call", lambda cmd: pytest.fail("launched"))
    assert cli.main(["study", "--preset", "tiny", "--nproc", "0", "--out", str(tmp_path)]) == 2
    assert "--nproc 0" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["study", "--preset", "tiny", "--nproc", "2", "--out", str(tmp_path)]) == 2
    assert "inside a torchrun job" in capsys.readouterr().err


def test_python_m_reversalkit_is_the_cli():
    proc = subprocess.run([sys.executable, "-m", "reversalkit", "study", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--nproc" in proc.stdout
