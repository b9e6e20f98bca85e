"""Build script: the pure-Python package plus the C++ extension reversalkit._C.

`kernels/` is installed as the subpackage `reversalkit.kernels`. The extension is host-side C++17
with no torch linkage (n-gram statistics, CPU decode kernels), so it builds
without torch; OpenMP is used where the compiler has it.
Run: `pip install .` or `pip install -e .`
"""

import glob
import os
import sys

from pybind11.setup_helpers import Pybind11Extension, build_ext, has_flag
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

class BuildExt(build_ext):
    """Adds OpenMP where the compiler has it: the host kernels then share the process's OpenMP pool
    with torch (see csrc/parallel.h); without it they fall back to std::thread."""

    def build_extensions(self):
        if sys.platform != "win32" and has_flag(self.compiler, "-fopenmp"):
            for ext in self.extensions:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
        super().build_extensions()


packages = find_packages(include=["reversalkit", "reversalkit.*"]) + ["reversalkit.kernels"]

setup(
    packages=packages,
    package_dir={"reversalkit.kernels": "kernels"},
    package_data={"reversalkit": ["presets/*.yaml", "tasks/data/*"]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExt},
    zip_safe=False,
)
