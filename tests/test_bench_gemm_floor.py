"""The benchmarks' gemm-floor yardstick runs exactly the three lm_head GEMMs it stands for."""

import importlib.util
from pathlib import Path

import torch

# By path: the suite also runs from outside the repository (nox), where `benchmarks` is no package
# (and putting the repository on sys.path would shadow the installed reversalkit).
_spec = importlib.util.spec_from_file_location(
    "rk_bench_floor", Path(__file__).resolve().parents[1] / "benchmarks" / "floor.py")
_floor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_floor)
gemm_floor = _floor.gemm_floor


def test_gemm_floor_computes_logits_and_both_products_chunk_by_chunk():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 7, 5, generator=gen, dtype=torch.float64).requires_grad_()
    weight = torch.randn(11, 5, generator=gen, dtype=torch.float64).requires_grad_()
    gemm_floor(hidden, weight, chunk=3)().backward()  # 14 rows: chunks of 3, 3, 3, 3, 2
    h = hidden.detach().reshape(-1, 5)
    logits = h @ weight.detach().t()
    torch.testing.assert_close(hidden.grad.reshape(-1, 5), logits @ weight.detach())
    torch.testing.assert_close(weight.grad, logits.t() @ h)


def test_gemm_floor_without_gradients_runs_the_forward_gemm_only():
    hidden, weight = torch.randn(4, 3), torch.randn(6, 3)
    out = gemm_floor(hidden, weight, chunk=4)()
    assert out.shape == () and not out.requires_grad
