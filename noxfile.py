"""nox sessions: build, test, run the default study, benchmark, lint.

    pip install nox && nox -s tests      # CPU test suite
    nox -s study                         # the embedded default study (tiny preset)
    nox -s bench | lint | build | gpu_tests

On a machine without CUDA the sessions install the CPU wheel `torch==2.13.0` before anything that
depends on torch, because a plain `torch` requirement pulls a multi-GB CUDA build. Set
REVERSALKIT_TORCH to any pip spec (e.g. "torch==2.13.0+cu126 --index-url ...") to choose your own;
where CUDA is present and REVERSALKIT_TORCH is unset, torch comes from the project's requirement.
Virtual environments are reused, so a second run skips installation.
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

CPU_TORCH = "torch==2.13.0"


def _has_cuda() -> bool:
    return shutil.which("nvidia-smi") is not None


def install_project(session: nox.Session, extras: str = "") -> None:
    """torch first (CPU wheel unless told otherwise), then the package with its C++ extension."""
    spec = os.environ.get("REVERSALKIT_TORCH")
    if spec:
        session.install(*spec.split())
    elif not _has_cuda():
        session.install(CPU_TORCH)
    target = f".[{extras}]" if extras else "."
    # Not editable: the session tests what a user installs, compiled extension included.
    session.install(target)


def _in_repo_env(session: nox.Session) -> dict[str, str]:
    # Run from a temporary directory so that `import reversalkit` resolves to the installed copy.
    return {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@nox.session
def tests(session: nox.Session) -> None:
    """CPU test suite (GPU tests are skipped without CUDA)."""
    install_project(session, "test")
    tmp = session.create_tmp()
    tests_dir = os.path.join(os.getcwd(), "tests")
    session.chdir(tmp)
    session.run("python", "-m", "pytest", tests_dir, "-x", "-q", "-p", "no:cacheprovider",
                *session.posargs, env=_in_repo_env(session))


@nox.session
def study(session: nox.Session) -> None:
    """The embedded default study: synthetic task, tiny Llama, all three methods, report."""
    install_project(session)
    args = session.posargs or ["--preset", "tiny", "--out", "runs/tiny"]
    session.run("reversalkit", "study", *args, env=_in_repo_env(session))


@nox.session
def bench(session: nox.Session) -> None:
    """Every CPU benchmark, each printed beside its baselines."""
    install_project(session, "bench")
    names = session.posargs or ["ngrams", "similarity", "logprob", "dpo", "sampler", "train", "study",
                                 "sandbox", "seed_jobs"]
    for name in names:
        session.run("python", "-m", f"benchmarks.bench_{name}", env=_in_repo_env(session))


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "reversalkit", "kernels", "benchmarks", "tests", "noxfile.py", "setup.py")


@nox.session
def build(session: nox.Session) -> None:
    """sdist + wheel (with the compiled extension) into dist/."""
    session.install("build")
    session.run("python", "-m", "build", "--outdir", "dist")


@nox.session
def gpu_tests(session: nox.Session) -> None:
    """Tests marked `gpu`, for a CUDA machine."""
    install_project(session, "test")
    tmp = session.create_tmp()
    tests_dir = os.path.join(os.getcwd(), "tests")
    session.chdir(tmp)
    session.run("python", "-m", "pytest", tests_dir, "-m", "gpu", "-q", *session.posargs)
