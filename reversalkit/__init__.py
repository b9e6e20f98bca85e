"""reversalkit: measure self-improvement reversal in iterative post-training (arXiv 2407.05013).

Subpackages: `tasks` (problems, answer checking, sandbox), `engine` (paged-KV sampler), `kernels`
(every op: fused log-prob / DPO loss, RMSNorm, RoPE, SiLU-mul, paged decode, top-p sampling),
`train` (SFT and DPO steps), `metrics` (pass@k, coverage, transitions, diversity), `study` (the
iterative loop, run store, report). Import what you use; this module stays light so that
`import reversalkit` is fast.
"""

import importlib.abc
import importlib.util
import os
import sys

__version__ = "0.1.0"


class _CheckoutKernels(importlib.abc.MetaPathFinder):
    """In a source checkout the ops live in `kernels/` beside this package; an install maps that
    folder to `reversalkit.kernels` (setup.py's package_dir). This finder does the same mapping when
    reversalkit is imported straight from a checkout (e.g. `python -m benchmarks.gpu_engine` run in
    the repository root), and only for that one name."""

    def __init__(self, folder: str):
        self.folder = folder

    def find_spec(self, name, path=None, target=None):
        if name != "reversalkit.kernels":
            return None
        return importlib.util.spec_from_file_location(
            name, os.path.join(self.folder, "__init__.py"), submodule_search_locations=[self.folder])


_here = os.path.dirname(os.path.abspath(__file__))
_beside = os.path.join(os.path.dirname(_here), "kernels")
if (not os.path.isdir(os.path.join(_here, "kernels")) and os.path.isfile(os.path.join(_beside, "__init__.py"))
        and not any(isinstance(f, _CheckoutKernels) for f in sys.meta_path)):
    sys.meta_path.insert(0, _CheckoutKernels(_beside))
