"""Compile every Triton kernel of the project for an H100 (sm_90) on a machine without a GPU.

Run as a script (`python tests/triton_compile_check.py`), without TRITON_INTERPRET: a stand-in
driver reports a CUDA sm_90 target, and every kernel launch is turned into a compile-only warmup,
so the host wrappers run as they would on CUDA (same specialisations, constexprs and dtypes) while
Triton's front end, MLIR lowering and ptxas build each kernel. Outputs are left unwritten, so the
host code after a launch sees garbage; only the compiles matter. Prints one line per compiled
kernel variant and `compiled N kernels`; any compile error propagates and fails the run.
Type errors of compiled Triton (integer widths, pointer arithmetic, loop-carried types) do not
show in the interpreter, which runs kernels as numpy code.
"""

from __future__ import annotations

import os
import sys

os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import torch  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402


class CompileOnlyDriver:
    """Just enough of a CUDA driver for JITFunction.run to pick an sm_90 target."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_active_torch_device(self):
        return torch.device("cpu")


COMPILED: list[tuple[str, int]] = []
_run = JITFunction.run


def _compile_only(self, *args, grid, warmup, **kwargs):
    kernel = _run(self, *args, grid=grid, warmup=True, **kwargs)
    COMPILED.append((self.fn.__name__, len(kernel.asm["cubin"])))
    return kernel


def _as_on_cuda() -> None:
    """Host-side choices that depend on the device take their CUDA branch."""
    from reversalkit.kernels import _backend, dpo, logprob

    _backend.interpreting = lambda: True  # backend="triton" on CPU tensors

    def precise(x: torch.Tensor) -> bool:  # libdevice exp/log for fp32, as on CUDA
        return x.dtype in (torch.float32, torch.float64) and _backend.libdevice is not None

    for module in (_backend, dpo, logprob):
        module.precise_math = precise


def log_prob_kernels() -> None:
    from reversalkit.kernels import (
        dpo_loss,
        linear_dpo_loss,
        linear_nll_loss,
        linear_token_logprobs,
        sequence_logprobs,
        token_logprobs,
    )

    for dtype in (torch.float32, torch.bfloat16):
        logits = torch.randn(7, 1000, dtype=dtype, requires_grad=True)
        targets = torch.randint(0, 1000, (7,))
        token_logprobs(logits, targets, backend="triton").sum().backward()
        hidden = torch.randn(7, 64, dtype=dtype, requires_grad=True)
        weight = torch.randn(1000, 64, dtype=dtype, requires_grad=True)
        for grad_in_forward in (False, True):
            linear_token_logprobs(hidden, weight, targets, backend="triton",
                                  grad_in_forward=grad_in_forward).sum().backward()
        linear_nll_loss(hidden, weight, targets, backend="triton").backward()
        h3 = torch.randn(4, 9, 64, dtype=dtype, requires_grad=True)
        ids = torch.randint(0, 1000, (4, 9))
        mask = torch.zeros(4, 9, dtype=torch.bool)
        mask[:, 4:] = True
        sequence_logprobs(h3, weight, ids, mask, backend="triton")[0].sum().backward()
        ref = torch.randn(2)
        linear_dpo_loss(h3, weight, ids, mask, ref, ref, backend="triton", nll_weight=0.1).loss.backward()
    for loss_type in ("sigmoid", "ipo", "hinge", "robust"):
        pc = torch.randn(5, requires_grad=True)
        loss, _, _ = dpo_loss(pc, torch.randn(5), torch.randn(5), torch.randn(5), loss_type=loss_type,
                              backend="triton")
        loss.backward()


def engine_kernels() -> None:
    from reversalkit.kernels.paged_decode import paged_decode
    from reversalkit.kernels.rms_norm import add_rms_norm
    from reversalkit.kernels.rope import rope
    from reversalkit.kernels.sample_top_p import sample_top_p
    from reversalkit.kernels.silu_mul import silu_mul

    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = torch.randn(5, 256, dtype=dtype)
        w = torch.randn(256, dtype=dtype)
        add_rms_norm(x, w, 1e-6, backend="triton")
        add_rms_norm(x, w, 1e-6, torch.randn(5, 256, dtype=dtype), backend="triton")
        silu_mul(torch.randn(5, 2 * 688, dtype=dtype), backend="triton")
        D = 64
        cos, sin = torch.randn(128, D, dtype=dtype), torch.randn(128, D, dtype=dtype)
        rope(torch.randn(5, 12 * D, dtype=dtype), torch.arange(5), cos, sin, 10, backend="triton")
        q = torch.randn(3, 8, D, dtype=dtype)
        kc, vc = torch.randn(20, 16, 2, D, dtype=dtype), torch.randn(20, 16, 2, D, dtype=dtype)
        tables = torch.arange(18, dtype=torch.int32).view(3, 6)
        lens = torch.tensor([5, 40, 96], dtype=torch.int32)
        for window in (None, 32):
            paged_decode(q, kc, vc, tables, lens, D ** -0.5, window, backend="triton", block_n=64)
        keys = torch.zeros(4, dtype=torch.int64)
        sample_top_p(torch.randn(4, 5000, dtype=dtype), 0.75, 0.95, keys, keys, backend="triton")


def main() -> int:
    driver.set_active(CompileOnlyDriver())
    JITFunction.run = _compile_only
    _as_on_cuda()
    log_prob_kernels()
    engine_kernels()
    for name, size in sorted(set(COMPILED)):
        print(f"{name}: {size} bytes of sm_90 code")
    print(f"compiled {len(set(COMPILED))} kernels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
