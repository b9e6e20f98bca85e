"""Build script: the pure-Python package plus the C++ extension reversalkit._C.

`kernels/` is installed as the subpackage `reversalkit.kernels`. The extension is host-side C++17
with no torch linkage (KV block allocator, n-gram statistics), so it builds without torch.
Run: `pip install .` or `pip install -e .`
"""

import glob
import os
import sys

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

extra_compile_args = ["-O3"]
if sys.platform != "win32":
    extra_compile_args += ["-Wall", "-Wextra", "-fvisibility=hidden"]
if os.environ.get("REVERSALKIT_NATIVE", "0") == "1":  # opt-in: wheels stay portable by default
    extra_compile_args.append("-march=native")

ext_modules = [
    Pybind11Extension(
        "reversalkit._C",
        sorted(glob.glob("csrc/*.cpp")),
        include_dirs=["csrc"],
        cxx_std=17,
        extra_compile_args=extra_compile_args,
    )
]

packages = find_packages(include=["reversalkit", "reversalkit.*"]) + ["reversalkit.kernels"]

setup(
    packages=packages,
    package_dir={"reversalkit.kernels": "kernels"},
    package_data={"reversalkit": ["presets/*.yaml", "tasks/data/*"]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext},
    zip_safe=False,
)
