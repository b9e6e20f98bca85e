"""Backend choice and shared helpers for the kernels.

Every public op takes `backend="auto" | "triton" | "torch"`, the model's elementwise ops (rms_norm,
rope, silu_mul) also "cpp":
- "auto": Triton for CUDA tensors (when triton is installed); on the CPU, an op's C++ entry in
  reversalkit._C for float32 where it has one and the extension is built; the torch path otherwise.
- "triton": the Triton kernels whatever the device. On CPU tensors this needs Triton's interpreter
  (`TRITON_INTERPRET=1` set before triton is imported); tests use it to run the GPU code on CPU.
- "cpp": the op's C++ entry (float32 CPU tensors, reversalkit._C built).
- "torch": the plain-torch path (the CPU path), also on CUDA tensors.

The choice is an argument, never module state, so two callers in one process never disagree.
"""

from __future__ import annotations

import functools
import os

import torch

from reversalkit._ext import native

try:  # triton is optional: the CPU path needs only torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = None

try:  # correctly rounded exp/log on CUDA; absent from Triton's interpreter (see `precise_math`)
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - old triton or no triton
    libdevice = None

BACKENDS = ("auto", "triton", "torch")
OP_BACKENDS = ("auto", "triton", "cpp", "torch")

if triton is not None:
    # exp/log for the kernels: libdevice's correctly rounded ones when PRECISE (see `precise_math`).

    @triton.jit
    def kernel_exp(x, PRECISE: tl.constexpr):
        if PRECISE:
            return libdevice.exp(x)
        else:
            return tl.exp(x)

    @triton.jit
    def kernel_log(x, PRECISE: tl.constexpr):
        if PRECISE:
            return libdevice.log(x)
        else:
            return tl.log(x)

else:  # pragma: no cover - the kernels that use them are defined only with triton
    kernel_exp = kernel_log = None

# Bytes of (rows, V) logits one chunk may hold. CPU: 64 MiB keeps a chunk's matmul efficient
# (>= ~500 rows at V=32k) while the chunk stays far below the full logits; CUDA: 512 MiB gives
# cuBLAS GEMMs of >= 2k rows at V=128k, where they run near peak.
CPU_CHUNK_BYTES = 64 * 2**20
CUDA_CHUNK_BYTES = 512 * 2**20


def has_triton() -> bool:
    return triton is not None


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1): Triton block sizes."""
    return 1 << max(0, (n - 1).bit_length())


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str, *tensors: torch.Tensor) -> str:
    """Map "auto" | "triton" | "torch" to the path that runs: "triton" or "torch"."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    on_cuda = any(t.is_cuda for t in tensors)
    if backend == "auto":
        return "triton" if on_cuda and has_triton() else "torch"
    if backend == "triton":
        if not has_triton():
            raise ValueError("backend='triton' needs the triton package: pip install triton")
        if not on_cuda and not interpreting():
            raise ValueError(
                "backend='triton' on CPU tensors needs Triton's interpreter: set TRITON_INTERPRET=1 before "
                "triton is first imported, or use backend='torch' / move the tensors to CUDA"
            )
    return backend


@functools.cache
def has_cpp(entry: str | None) -> bool:
    """Whether reversalkit._C is built with the function `entry` (None: never)."""
    ext = native() if entry is not None else None
    return ext is not None and hasattr(ext, entry)


def resolve_op_backend(op: str, backend: str, tensors: tuple[torch.Tensor, ...], *, triton_fits: bool,
                       cpp_entry: str | None, cpp_fits: bool = True, unfit: str = "") -> str:
    """The path an op runs, "triton" | "cpp" | "torch", picked from device, dtype and availability.

    triton_fits: the op's Triton kernel takes these arguments (layout, head size, ...).
    cpp_entry: the op's function in reversalkit._C, None where it has none; cpp_fits: the entry takes
    these arguments beyond being float32 CPU tensors; unfit: what about the arguments keeps a
    kernel from taking them, for the error. "auto" takes Triton for CUDA tensors, the C++ entry for
    float32 CPU tensors when the extension is built, torch otherwise; an explicit backend that
    cannot run raises ValueError saying why. Runs on every call of an op, so it reads only
    cheap tensor attributes (a decode step calls the model's ops ~10 times per layer).
    """
    if backend == "auto" and not tensors[0].is_cuda:
        cpp_ok = cpp_fits and has_cpp(cpp_entry) and all(t.is_cpu and t.dtype is torch.float32 for t in tensors)
        return "cpp" if cpp_ok else "torch"
    if backend not in OP_BACKENDS:
        raise ValueError(f"{op}: backend={backend!r} is not one of {OP_BACKENDS}")
    if backend == "torch":
        return "torch"
    if backend == "triton" or backend == "auto":  # "auto" here: CUDA tensors
        if backend == "auto" and not (triton_fits and has_triton()):
            return "torch"
        if not triton_fits:
            raise ValueError(f"{op}: the Triton kernel does not take these arguments "
                             f"({unfit or f'see {op} in reversalkit.kernels'})")
        return resolve_backend("triton", *tensors)
    if not (cpp_fits and has_cpp(cpp_entry) and all(t.is_cpu and t.dtype is torch.float32 for t in tensors)):
        if unfit and not cpp_fits and cpp_entry is not None:
            raise ValueError(f"{op}: backend='cpp' does not take these arguments ({unfit})")
        raise ValueError(
            f"{op}: backend='cpp' needs float32 CPU tensors of a layout its C++ entry takes and "
            f"reversalkit._C built with {cpp_entry or 'a C++ entry for this op (it has none)'}; got "
            f"{tensors[0].dtype} on {tensors[0].device} (build with `pip install -e .`, or use backend='auto')")
    return "cpp"


def precise_math(x: torch.Tensor) -> bool:
    """Use libdevice exp/log in a kernel (constexpr PRECISE) for fp32 data on CUDA.

    tl.exp on fp32 lowers to ex2.approx(x * log2e), whose relative error grows with |x| (about
    |x| * 6e-8); that is invisible next to bf16 rounding but can exceed torch's own fp32 error.
    The interpreter has no libdevice and computes exactly in numpy anyway.
    """
    return x.is_cuda and x.dtype in (torch.float32, torch.float64) and libdevice is not None


def chunk_rows(n_rows: int, vocab: int, device: torch.device, chunk_size: int | None) -> int:
    """Rows per chunk: the caller's `chunk_size`, else as many as fit the device's logits budget (fp32)."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
        return min(chunk_size, max(n_rows, 1))
    budget = CUDA_CHUNK_BYTES if device.type == "cuda" else CPU_CHUNK_BYTES
    return max(1, min(max(n_rows, 1), budget // (4 * max(vocab, 1))))


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Matmul dtype: the input's on CUDA (tensor cores, fp32 accumulate); fp32 on CPU, where bf16/fp16
    GEMMs are slow and accumulate less exactly."""
    if x.is_cuda or x.dtype == torch.float64:
        return x.dtype
    return torch.float32


def addmm_fp32_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b with acc fp32 and a, b possibly bf16/fp16, without rounding a @ b to 16 bits."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
        return
    if acc.is_cuda:
        try:  # cuBLAS accumulates in fp32 and adds into the fp32 acc directly (torch >= 2.8)
            torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
            return
        except (TypeError, RuntimeError):
            pass
        try:
            acc.add_(torch.mm(a, b, out_dtype=acc.dtype))
            return
        except (TypeError, RuntimeError):
            pass
    acc.addmm_(a.to(acc.dtype), b.to(acc.dtype))  # exact, at the cost of fp32 copies of a and b


# MKL's sgemm/dgemm switch to a matrix-vector path when A has fewer than 4 rows, which sums the K
# products serially: at K = 32000 (a vocabulary) its error was 10x the blocked kernel's (7.8e-5
# against 6.1e-6, fp32, measured on this project's CPU). With several threads MKL may split A's rows
# among them, so a chunk's remainder is padded to 4 rows per thread.
MIN_GEMM_ROWS_PER_THREAD = 4


def _min_gemm_rows() -> int:
    return MIN_GEMM_ROWS_PER_THREAD * max(1, torch.get_num_threads())


def mm_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """out = a @ b, rounding once to out's dtype (fp32 accumulation inside the GEMM)."""
    min_rows = 0 if a.is_cuda else _min_gemm_rows()
    if 0 < a.shape[0] < min_rows:
        padded = torch.cat([a, a.new_zeros(min_rows - a.shape[0], a.shape[1])])  # (min_rows, K)
        out.copy_(torch.mm(padded, b)[: a.shape[0]])
        return
    if a.dtype == out.dtype:
        torch.mm(a, b, out=out)
        return
    if out.is_cuda and out.dtype == torch.float32:
        try:
            torch.mm(a, b, out_dtype=out.dtype, out=out)
            return
        except (TypeError, RuntimeError):
            pass
        out.copy_(torch.mm(a.float(), b.float()))
        return
    out.copy_(torch.mm(a, b))  # a wider than out (fp32 compute, bf16/fp16 weight): one rounding
