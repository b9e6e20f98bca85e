"""Test configuration: offline hubs, Triton's interpreter on CPU-only machines, the `gpu` marker."""

import os
import shutil

# Must happen before anything imports triton: without CUDA, Triton kernels run in its interpreter.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Tiny models: one intra-op thread avoids OpenMP stalls when the machine is shared."""
    from train_fixtures import single_thread

    with single_thread():
        yield
