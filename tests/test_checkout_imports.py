"""reversalkit imported straight from a source checkout (the repository root on sys.path, as
`python -m benchmarks.X` run there has it) finds its kernels, which an install maps from kernels/."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kernels_import_from_a_checkout():
    code = ("import reversalkit, reversalkit.kernels.rms_norm as r, reversalkit.kernels as k; "
            "print(reversalkit.__file__); print(k.__file__); print(r.add_rms_norm.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pkg, kernels, module = proc.stdout.split()
    assert Path(pkg) == ROOT / "reversalkit" / "__init__.py"  # the checkout, not an install
    assert Path(kernels) == ROOT / "kernels" / "__init__.py" and module == "reversalkit.kernels.rms_norm"
