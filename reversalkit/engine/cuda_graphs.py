"""CUDA graphs of the paged decode step: one graph per batch-size bucket, replayed every step.

An eager decode step of a ~1B model launches a few hundred small kernels and is bound by the host
(Python + launch latency), not by HBM; replaying a captured graph removes that cost. A batch of B
rows runs the graph of the smallest bucket >= B; the rows in between are parked on a scratch KV
block that no sequence owns (position 0, context 1), so their writes and reads touch nothing else.
Capture happens on the first decode and falls back to eager execution (with a warning) if it fails.
"""

from __future__ import annotations

import warnings

import torch


def buckets(max_batch: int) -> list[int]:
    """1, 2, 4, ..., 128, then steps of 64 up to max_batch (included)."""
    out, b = [], 1
    while b < min(max_batch, 128):
        out.append(b)
        b *= 2
    b = 128
    while b < max_batch:
        out.append(b)
        b += 64
    out.append(max_batch)
    return sorted(set(out))


class DecodeGraphs:
    """Graphs of `runner.forward_decode`; the runner is passed in on each call (no reference cycle)."""

    def __init__(self, max_rows: int, scratch_block: int):
        self.scratch = scratch_block
        self.sizes = buckets(max_rows)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.failed: str | None = None

    def reset(self) -> None:
        """Drop the recorded graphs (they point at the weights they were captured with); the next
        decode step captures again. Call after the model's weight tensors are replaced."""
        self.graphs.clear()
        self.outputs.clear()
        self.failed = None

    def _park(self, r, lo: int, hi: int) -> None:
        r.row_pos[lo:hi] = 0
        r.row_tokens[lo:hi] = 0
        r.block_tables[lo:hi, 0] = self.scratch

    def capture(self, r) -> None:
        """Record one graph per bucket. Capture runs on the first decode step, while rows 0..B-1
        hold live sequences: their row state is parked for the recording and restored afterwards."""
        saved = r.row_pos.clone(), r.row_tokens.clone(), r.block_tables.clone()
        self._park(r, 0, r.max_rows)
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # compiles the Triton kernel and warms the allocator
                    r.forward_decode(self.sizes[-1])
            torch.cuda.current_stream().wait_stream(stream)
            pool = None
            for b in reversed(self.sizes):  # largest first: the shared pool is sized once
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=pool):
                    self.outputs[b] = r.forward_decode(b)
                pool = g.pool()
                self.graphs[b] = g
        except Exception as exc:  # noqa: BLE001 - any capture problem means: run eagerly
            self.failed = f"{type(exc).__name__}: {exc}"
            self.graphs.clear()
            self.outputs.clear()
            warnings.warn(f"CUDA graph capture failed ({self.failed}); decoding eagerly", RuntimeWarning,
                          stacklevel=2)
        finally:
            torch.cuda.synchronize()
            for live, kept in zip((r.row_pos, r.row_tokens, r.block_tables), saved):
                live.copy_(kept)

    def __call__(self, r, B: int) -> torch.Tensor | None:
        """Logits (B, V) of runner r's decode step, or None when graphs are unavailable."""
        if not self.graphs and self.failed is None:
            self.capture(r)
        if not self.graphs:
            return None
        size = next(b for b in self.sizes if b >= B)
        if size > B:
            self._park(r, B, size)
        self.graphs[size].replay()
        return self.outputs[size][:B]
