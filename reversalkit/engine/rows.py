"""CPU decode path: contiguous per-sequence KV rows and cascade attention over the shared prefix.

On a CPU, gathering scattered KV blocks every step costs ~10x the attention itself (measured:
32 ms vs 3.4 ms per layer at 256 sequences x 200 tokens), so each running sequence also keeps its
KV after the shared prefix contiguous in a row of `RowKV`, extended by one token per step. The
shared prefix (the few-shot examples every prompt starts with) is attended once for the whole
batch as one matrix product of its scores. The n samples of one prompt share the prompt's tokens
after that prefix as a sample group, stored once (see `RowKV`). The softmax over prefix + group +
own tokens and the weighted values are `reversalkit.kernels.paged_decode.row_decode`: the fused C++
kernel for float32 with the extension built, else batched torch GEMMs (which at 2 x 32 by 32 x ~100
per head spend most of their time on per-matrix overhead: 256 rows x 76 tokens, measured 4-9 ms vs
3-4 ms per layer on a loaded 2-core EPYC, 7x apart when the KV stays in cache).
Decoded tokens live only in the rows: their blocks are reserved (memory accounting and preemption
are the same on every backend) but neither written nor sealed, so a preempted sequence recomputes
them.
"""

from __future__ import annotations

import torch

from reversalkit.engine.attention import KVCache
from reversalkit.kernels.paged_decode import row_decode


class RowKV:
    """CPU decode rows: the KV of each running sequence after the shared prefix, contiguous.

    k, v: (layers, rows, Hkv, max_tail, D); prefix_k, prefix_v: (layers, Hkv, Lc, D);
    group_k, group_v: (layers, groups, Hkv, group_tail, D).
    The n samples of one prompt start from the same KV: the prompt's tokens after the shared prefix
    are stored once, as their sample group, and each row holds only what its sample adds. Decode
    attention reads a group's K/V once for all its samples while it is in cache: the prompt is most
    of a short sample's context, so this about halves the memory traffic of attention (measured: a
    700-row layer with 32 shared + 20 own tokens per row took 0.86 ms vs 1.6 ms with 52 own).
    Row r holds positions prefix_len + glen[r] .. of the sequence running in row r, where glen[r]
    is the length of its group `group[r]` (0 and -1 without one).
    """

    def __init__(self, num_layers: int, rows: int, num_kv_heads: int, head_dim: int, max_tail: int,
                 dtype: torch.dtype, group_tail: int = 0):
        shape = (num_layers, rows, num_kv_heads, max_tail, head_dim)
        self.k = torch.zeros(shape, dtype=dtype)  # zeros: masked scores must stay finite
        self.v = torch.zeros(shape, dtype=dtype)
        self.max_tail, self.group_tail = max_tail, group_tail
        gshape = (num_layers, max(rows // 2, 1) if group_tail else 0, num_kv_heads, group_tail, head_dim)
        self.group_k = torch.zeros(gshape, dtype=dtype)  # a group has >= 2 rows: rows // 2 groups at most
        self.group_v = torch.zeros(gshape, dtype=dtype)
        self.group = torch.full((rows,), -1, dtype=torch.int64)
        self.glen = torch.zeros(rows, dtype=torch.int64)
        self.prefix_len = 0
        self.prefix_k = self.prefix_v = None

    def fits(self, rows: int, max_tail: int, dtype: torch.dtype, group_tail: int = 0) -> bool:
        return (self.k.shape[1] >= rows and self.max_tail >= max_tail and self.k.dtype == dtype
                and self.group_tail >= group_tail)

    def set_prefix(self, cache: KVCache, slots: torch.Tensor) -> None:
        """Copy the shared prefix (slots: (Lc,)) out of the paged cache."""
        self.prefix_len = int(slots.numel())
        self.group.fill_(-1)
        self.glen.zero_()
        if self.prefix_len == 0:
            self.prefix_k = self.prefix_v = None
            return
        kv = cache.flat[:, :, slots]  # (layers, 2, Lc, Hkv, D)
        self.prefix_k = kv[:, 0].transpose(1, 2).contiguous()
        self.prefix_v = kv[:, 1].transpose(1, 2).contiguous()

    def fill(self, cache: KVCache, rows: slice, slots: torch.Tensor) -> None:
        """Load rows rows.start.. (all holding the same sequence state; rows before them are in
        use) from the cache; slots: positions prefix_len .. n-1 of that state. Two or more rows
        share that state as a sample group when a group fits it."""
        n = slots.numel()
        count = rows.stop - rows.start
        g = self._free_group(rows.start) if count > 1 and 0 < n <= self.group_tail else None
        self.group[rows] = -1 if g is None else g
        self.glen[rows] = 0 if g is None else n
        if n:
            kv = cache.flat[:, :, slots].transpose(2, 3)  # (layers, 2, Hkv, n, D)
            if g is not None:
                self.group_k[:, g, :, :n] = kv[:, 0]
                self.group_v[:, g, :, :n] = kv[:, 1]
            else:
                self.k[:, rows, :, :n] = kv[:, 0].unsqueeze(1)
                self.v[:, rows, :, :n] = kv[:, 1].unsqueeze(1)

    def _free_group(self, live: int) -> int | None:
        """A group no row in 0..live-1 uses (None when all are taken)."""
        free = torch.ones(self.group_k.shape[1], dtype=torch.bool)
        used = self.group[:live]
        free[used[used >= 0]] = False
        idx = free.nonzero()
        return int(idx[0]) if idx.numel() else None

    def move(self, src: torch.Tensor, dst: torch.Tensor, context: torch.Tensor) -> None:
        """Rows src -> rows dst, all read before any is written. src, dst: int64 (M,); context:
        (M,) the tokens after the shared prefix that each src row holds or shares through its group."""
        length = int((context - self.glen[src]).max()) if src.numel() else 0
        if length > 0:  # the longest row's length for all: past a row's own length is never read
            self.k[:, dst, :, :length] = self.k[:, src, :, :length]
            self.v[:, dst, :, :length] = self.v[:, src, :, :length]
        self.group[dst] = self.group[src]
        self.glen[dst] = self.glen[src]


class RowDecodeAttention:
    """attend(layer, q, k, v) on the CPU rows: `row_decode` over the shared prefix, each row's sample
    group and its own tokens, with each layer's window turned into per-row token ranges once per step.

    positions: (B,) position of each row's new token (rows 0..B-1 run); backend: row_decode's
    ("auto" | "cpp" | "torch").
    """

    def __init__(self, rows: RowKV, positions: torch.Tensor, windows: tuple[int | None, ...], scale: float,
                 backend: str = "auto"):
        self.rows, self.scale, self.windows, self.backend = rows, scale, windows, backend
        Lc = rows.prefix_len
        self.glen = rows.glen[:positions.shape[0]].contiguous()  # (B,) group tokens of each row
        self.group = rows.group[:positions.shape[0]].contiguous()
        own = positions - Lc - self.glen  # (B,) index of the new token in its row
        self.hi = (own + 1).contiguous()  # (B,) row tokens [lo, hi) of each row
        # window -> (row lo, prefix lo, group lo)
        self.lo: dict[int | None, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for w in set(windows):
            if w is None:
                zeros = torch.zeros_like(own)
                self.lo[w] = (zeros, zeros, zeros)
            else:  # keys > position - w stay visible
                first = positions - w + 1
                self.lo[w] = ((first - Lc - self.glen).clamp_(min=0).contiguous(),
                              first.clamp(min=0).contiguous(),
                              torch.minimum((first - Lc).clamp_(min=0), self.glen).contiguous())

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q: (B, H, D); k, v: (B, Hkv, D), stored in the rows -> (B, H * D)."""
        R = self.rows
        lo, prefix_lo, group_lo = self.lo[self.windows[layer]]
        prefix = (R.prefix_k[layer], R.prefix_v[layer], prefix_lo) if R.prefix_len else None
        groups = None
        if R.group_k.shape[1]:
            groups = (R.group_k[layer], R.group_v[layer], self.group, group_lo, self.glen)
        out = row_decode(q, R.k[layer], R.v[layer], lo, self.hi, self.scale, new_kv=(k, v), prefix=prefix,
                         groups=groups, backend=self.backend)
        return out.view(q.shape[0], -1)
