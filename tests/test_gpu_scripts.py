"""The one-shot GPU scripts run end to end in their --dry-run mode (tiny shapes, Triton's interpreter).

These runs catch what can break without a card (imports, argument handling, shapes, the report
code) on the CPU.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _dry_run(module: str, *args: str) -> str:
    env = {**os.environ, "TRITON_INTERPRET": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("OUT", None)
    cmd = [sys.executable, "-m", f"benchmarks.{module}", "--dry-run", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    return proc.stdout


@pytest.mark.timeout(300)
def test_gpu_engine_dry_run():
    out = _dry_run("gpu_engine", "--budget", "40")
    checks = [line for line in out.splitlines() if line.startswith("check ")]
    assert len(checks) == 3 and all(line.endswith("PASS") for line in checks), out[-3000:]
    assert "triton top-p sampler vs torch path" in out and re.search(r"bench  reversalkit\s+\d+x", out)


@pytest.mark.timeout(300)
def test_gpu_kernels_dry_run():
    out = _dry_run("gpu_kernels")
    m = re.search(r"correctness (\d+)/(\d+) ok", out)
    assert m and m.group(1) == m.group(2) and int(m.group(2)) > 0, out[-3000:]
    assert "| dpo fwd+bwd | rk-fused |" in out


@pytest.mark.timeout(300)
def test_gpu_engine_profile_dry_run():
    out = _dry_run("gpu_engine_profile")
    assert re.search(r"plain run: \d+ tokens in [\d.]+ s", out), out[-3000:]
