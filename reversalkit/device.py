"""Device and dtype names, resolved in one place (a leaf: it imports only torch).

    resolve_device("auto")          # "cuda" when CUDA is available, else "cpu"
    resolve_dtype("auto", "cuda")   # bf16 on a CUDA device that supports it, else fp32
"""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str) -> str:
    """'auto' is "cuda" when CUDA is available, else "cpu"; any other name is checked and kept."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use device: cpu")
    return device


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    """A torch.dtype, a name in DTYPES, or 'auto': bf16 on a CUDA device that supports it, fp32
    elsewhere (a checkpoint's stored dtype plays no part)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        dev = torch.device(device)
        bf16 = dev.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto', a torch.dtype or one of "
                         f"{', '.join(sorted(DTYPES))}")
    return DTYPES[dtype]
