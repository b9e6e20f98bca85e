"""CPU decode path: contiguous per-sequence KV rows and cascade attention over the shared prefix.

On a CPU, gathering scattered KV blocks every step costs ~10x the attention itself (measured:
32 ms vs 3.4 ms per layer at 256 sequences x 200 tokens), so each running sequence also keeps its
KV after the shared prefix contiguous in a row of `RowKV`, extended by one token per step. The
shared prefix (the few-shot examples every prompt starts with) is attended once for the whole
batch as one matrix product of its scores. The n samples of one prompt share the prompt's tokens
after that prefix as a sample group, stored once (see `RowKV`). The softmax over prefix + group +
own tokens and the weighted values then run in reversalkit._C's fused kernel
(csrc/decode_attention.cpp), or without the extension in torch (batched GEMMs, which at 2 x 32 by
32 x ~100 per head spend most of their time on per-matrix overhead: 256 rows x 76 tokens,
measured 4-9 ms vs 3-4 ms per layer on a loaded 2-core EPYC, 7x apart when the KV stays in cache).
Decoded tokens live only in the rows: their blocks are reserved (memory accounting and preemption
are the same on every backend) but neither written nor sealed, so a preempted sequence recomputes
them.
"""

from __future__ import annotations

import torch

from reversalkit._ext import native
from reversalkit.engine.attention import NEG_INF, KVCache


def _row_kernel():
    ext = native()
    return getattr(ext, "row_attention_f32", None) if ext is not None else None


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
    """attend(layer, q, k, v) on the CPU rows: shared prefix as one GEMM, each row's sample group
    and own tokens by the fused kernel (float32 with the extension built, `use_kernel`) or by
    torch's batched GEMMs.

    positions: (B,) position of each row's new token (rows 0..B-1 run).
    """

    def __init__(self, rows: RowKV, positions: torch.Tensor, windows: tuple[int | None, ...], scale: float,
                 use_kernel: bool = True):
        self.rows, self.scale, self.windows = rows, scale, windows
        B = positions.shape[0]
        Lc = rows.prefix_len
        self.glen = rows.glen[:B].contiguous()  # (B,) group tokens of each row
        self.group = rows.group[:B].contiguous()
        own = positions - Lc - self.glen  # (B,) index of the new token in its row
        self.B, self.Lc = B, Lc
        self.kernel = _row_kernel() if use_kernel and rows.k.dtype == torch.float32 else None
        if self.kernel is not None:
            self._init_kernel(positions, own)
        else:
            Hkv = rows.k.shape[2]
            row_idx = torch.arange(B)[:, None] * Hkv + torch.arange(Hkv)[None, :]  # (B, Hkv)
            self.write_idx = (row_idx * rows.max_tail + own[:, None]).flatten()
            self._init_torch(positions, own)

    def _init_kernel(self, positions: torch.Tensor, own: torch.Tensor) -> None:
        self.hi = (own + 1).contiguous()  # (B,) row tokens [lo, hi) of each row
        # window -> (row lo, prefix lo, group lo)
        self.lo: dict[int | None, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for w in set(self.windows):
            if w is None:
                zeros = torch.zeros_like(own)
                self.lo[w] = (zeros, zeros, zeros)
            else:  # keys > position - w stay visible
                first = positions - w + 1
                self.lo[w] = ((first - self.Lc - self.glen).clamp_(min=0).contiguous(),
                              first.clamp(min=0).contiguous(),
                              torch.minimum((first - self.Lc).clamp_(min=0), self.glen).contiguous())
        self.threads = torch.get_num_threads()

    def _init_torch(self, positions: torch.Tensor, own: torch.Tensor) -> None:
        Lc = self.Lc
        self.Lt = int(own.max()) + 1
        self.Gt = int(self.glen.max()) if self.B else 0
        self.biases: dict[int | None, torch.Tensor] = {}
        B = self.B
        t = torch.arange(self.Gt)
        key_pos = torch.cat([  # (B, Lc + Gt + Lt): each key's position; group slots past glen: never
            torch.arange(Lc).expand(B, Lc),
            torch.where(t[None, :] < self.glen[:, None], Lc + t[None, :], positions.max() + 1),
            Lc + self.glen[:, None] + torch.arange(self.Lt)[None, :]], dim=1)
        for w in set(self.windows):
            allowed = key_pos <= positions[:, None]
            if w is not None:
                allowed &= key_pos > positions[:, None] - w
            bias = torch.zeros(B, 1, 1, key_pos.shape[1], dtype=self.rows.k.dtype)
            self.biases[w] = bias.masked_fill_(~allowed[:, None, None, :], NEG_INF)

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q: (B, H, D); k, v: (B, Hkv, D) -> (B, H * D)."""
        if self.kernel is not None:  # the kernel stores k, v in the rows itself
            return self._fused(layer, q.contiguous(), k.contiguous(), v.contiguous())
        R = self.rows
        B, H, D = q.shape
        Hkv = k.shape[1]
        R.k[layer].view(-1, D).index_copy_(0, self.write_idx, k.reshape(B * Hkv, D))
        R.v[layer].view(-1, D).index_copy_(0, self.write_idx, v.reshape(B * Hkv, D))
        return self._torch(layer, q)

    def _fused(self, layer: int, q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor) -> torch.Tensor:
        R, w = self.rows, self.windows[layer]
        B, H, D = q.shape
        Hkv = R.k.shape[2]
        g, Lc = H // Hkv, self.Lc
        out = torch.empty(B, H, D)
        k, v = R.k[layer], R.v[layer]  # (rows, Hkv, max_tail, D)
        lo, prefix_lo, group_lo = self.lo[w]
        sc_ptr = pv_ptr = 0
        if Lc:  # scores against the shared prefix: one GEMM for the batch, (Hkv, B*g, Lc)
            qc = (q * self.scale).view(B, Hkv, g, D).permute(1, 0, 2, 3).reshape(Hkv, B * g, D)
            sc = torch.matmul(qc, R.prefix_k[layer].transpose(1, 2))
            sc_ptr, pv_ptr = sc.data_ptr(), R.prefix_v[layer].data_ptr()
        groups = {}
        if R.group_k.shape[1]:
            gk, gv = R.group_k[layer], R.group_v[layer]  # (groups, Hkv, group_tail, D)
            groups = dict(group_k=gk.data_ptr(), group_v=gv.data_ptr(), group_stride=gk.stride(0),
                          group_head_stride=gk.stride(1), group=self.group.data_ptr(),
                          group_lo=group_lo.data_ptr(), group_hi=self.glen.data_ptr())
        self.kernel(q.data_ptr(), k.data_ptr(), v.data_ptr(), k.stride(0), k.stride(1), lo.data_ptr(),
                    self.hi.data_ptr(), sc_ptr, pv_ptr, Lc, prefix_lo.data_ptr(), B, H, Hkv, D, self.scale,
                    out.data_ptr(), self.threads, k_new.data_ptr(), v_new.data_ptr(), **groups)
        return out.view(B, H * D)

    def _torch(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        R = self.rows
        B, H, D = q.shape
        Hkv = R.k.shape[2]
        g, Lc, Gt, Lt = H // Hkv, self.Lc, self.Gt, self.Lt
        q4 = (q * self.scale).view(B, Hkv, g, D)
        parts = []
        if Lc:
            qc = q4.permute(1, 0, 2, 3).reshape(Hkv, B * g, D)
            sc = torch.matmul(qc, R.prefix_k[layer].transpose(1, 2))  # (Hkv, B*g, Lc)
            parts.append(sc.view(Hkv, B, g, Lc).permute(1, 0, 2, 3))
        if Gt:
            gk = R.group_k[layer][self.group.clamp(min=0), :, :Gt]  # (B, Hkv, Gt, D)
            gv = R.group_v[layer][self.group.clamp(min=0), :, :Gt]
            parts.append(torch.matmul(q4, gk.transpose(-1, -2)))  # (B, Hkv, g, Gt)
        parts.append(torch.matmul(q4, R.k[layer, :B, :, :Lt].transpose(-1, -2)))  # (B, Hkv, g, Lt)
        s = torch.cat(parts, dim=-1)  # (B, Hkv, g, Lc + Gt + Lt)
        p = (s + self.biases[self.windows[layer]]).softmax(-1)
        o = torch.matmul(p[..., Lc + Gt:], R.v[layer, :B, :, :Lt])  # (B, Hkv, g, D)
        if Gt:
            o = o + torch.matmul(p[..., Lc:Lc + Gt], gv)
        if Lc:
            pc = p[..., :Lc].permute(1, 0, 2, 3).reshape(Hkv, B * g, Lc)
            oc = torch.matmul(pc, R.prefix_v[layer])  # (Hkv, B*g, D)
            o = o + oc.view(Hkv, B, g, D).permute(1, 0, 2, 3)
        return o.reshape(B, H * D)
