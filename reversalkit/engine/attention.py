"""Attention over the paged KV cache: storage, prefill, and the decode paths.

KV lives in fixed-size blocks: `KVCache.data` is (layers, 2, num_blocks, block_size, Hkv, D) and a
token's slot is `block * block_size + offset`. Three ways to attend:

- Prefill (`PrefillAttention`): each sequence's new tokens attend to its whole context (cached
  prefix blocks + new tokens) through SDPA, or flash-attn's varlen kernel on CUDA when installed.
- Paged decode (`PagedDecodeAttention`): one query per sequence reads K/V through its block table
  (`reversalkit.kernels.paged_decode`: the Triton kernel on CUDA, a gather in torch elsewhere).
- Row decode (rows.py, the CPU path): contiguous per-sequence KV rows plus cascade attention over
  the shared prefix and each prompt's sample group, because gathering scattered blocks every step
  costs ~10x the attention itself on a CPU.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from reversalkit.kernels.paged_decode import paged_decode


class KVCache:
    """Paged K/V storage for every layer."""

    def __init__(self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int,
                 head_dim: int, *, device: torch.device, dtype: torch.dtype):
        self.block_size = block_size
        self.data = torch.zeros(num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim,
                                device=device, dtype=dtype)
        # (layers, 2, slots, Hkv, D) view for token-level reads and writes
        self.flat = self.data.view(num_layers, 2, num_blocks * block_size, num_kv_heads, head_dim)

    def store(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """slots: (T,) int64; k, v: (T, Hkv, D)."""
        self.flat[layer, 0].index_copy_(0, slots, k)
        self.flat[layer, 1].index_copy_(0, slots, v)

    def copy_blocks(self, src: list[int], dst: list[int]) -> None:
        if src:
            s = torch.tensor(src, device=self.data.device)
            d = torch.tensor(dst, device=self.data.device)
            self.data[:, :, d] = self.data[:, :, s]


def context_slots(block_table: torch.Tensor, length: int, block_size: int) -> torch.Tensor:
    """Slots of positions 0..length-1 of a sequence. block_table: (>= ceil(length/bs),) int64."""
    pos = torch.arange(length, device=block_table.device)
    return block_table[pos // block_size] * block_size + pos % block_size


def causal_mask(q_pos: torch.Tensor, k_len: int, window: int | None) -> torch.Tensor:
    """Boolean (Lq, Lk) mask, True = attend: keys at or before the query, inside the window."""
    k_pos = torch.arange(k_len, device=q_pos.device)
    allowed = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        allowed &= k_pos[None, :] > q_pos[:, None] - window
    return allowed


@dataclasses.dataclass
class PrefillSeq:
    q_start: int  # offset of the sequence's new tokens in the packed batch
    q_len: int
    ctx_len: int  # cached + new tokens
    ctx_slots: torch.Tensor  # (ctx_len,) slots of the whole context


class PrefillAttention:
    """attend(layer, q, k, v) for a packed batch of new tokens from several sequences."""

    def __init__(self, cache: KVCache, seqs: list[PrefillSeq], slots: torch.Tensor,
                 windows: tuple[int | None, ...], scale: float, use_flash: bool = False):
        self.cache, self.seqs, self.slots, self.scale = cache, seqs, slots, scale
        self.windows = windows
        self._masks: dict[tuple[int, int | None], torch.Tensor | None] = {}
        self.flash = _flash_varlen() if use_flash else None

    def _mask(self, i: int, window: int | None) -> torch.Tensor | None:
        key = (i, window)
        if key not in self._masks:
            s = self.seqs[i]
            full = s.q_len == s.ctx_len and (window is None or window >= s.ctx_len)
            q_pos = torch.arange(s.ctx_len - s.q_len, s.ctx_len, device=self.slots.device)
            self._masks[key] = None if full else causal_mask(q_pos, s.ctx_len, window)
        return self._masks[key]

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q: (T, H, D); k, v: (T, Hkv, D) -> (T, H * D)."""
        self.cache.store(layer, self.slots, k, v)
        window = self.windows[layer]
        if self.flash is not None:
            return self._flash(layer, q, window)
        kf, vf = self.cache.flat[layer, 0], self.cache.flat[layer, 1]
        out = torch.empty_like(q)
        for i, s in enumerate(self.seqs):
            qs = q[s.q_start:s.q_start + s.q_len].transpose(0, 1).unsqueeze(0)  # (1, H, Lq, D)
            if s.q_len == s.ctx_len:  # nothing cached: use the fresh K/V, no gather
                ks, vs = k[s.q_start:s.q_start + s.q_len], v[s.q_start:s.q_start + s.q_len]
            else:
                ks, vs = kf.index_select(0, s.ctx_slots), vf.index_select(0, s.ctx_slots)
            ks, vs = ks.transpose(0, 1).unsqueeze(0), vs.transpose(0, 1).unsqueeze(0)  # (1, Hkv, Lk, D)
            mask = self._mask(i, window)
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, is_causal=mask is None,
                                               scale=self.scale, enable_gqa=True)
            out[s.q_start:s.q_start + s.q_len] = o[0].transpose(0, 1)
        return out.flatten(1)

    def _flash(self, layer: int, q: torch.Tensor, window: int | None) -> torch.Tensor:
        slots = torch.cat([s.ctx_slots for s in self.seqs])
        kf = self.cache.flat[layer, 0].index_select(0, slots)
        vf = self.cache.flat[layer, 1].index_select(0, slots)
        dev = q.device
        cu_q = torch.tensor([0] + [s.q_len for s in self.seqs], device=dev).cumsum(0).to(torch.int32)
        cu_k = torch.tensor([0] + [s.ctx_len for s in self.seqs], device=dev).cumsum(0).to(torch.int32)
        out = self.flash(q, kf, vf, cu_q, cu_k, max(s.q_len for s in self.seqs),
                         max(s.ctx_len for s in self.seqs), softmax_scale=self.scale, causal=True,
                         window_size=(-1, -1) if window is None else (window - 1, 0))
        return out.flatten(1)


def _flash_varlen():
    try:
        from flash_attn import flash_attn_varlen_func  # noqa: PLC0415
    except ImportError:
        return None
    return flash_attn_varlen_func


class PagedDecodeAttention:
    """attend(layer, q, k, v) for one new token per sequence, reading K/V through block tables.

    backend: `paged_decode`'s ("auto" | "triton" | "torch").
    """

    def __init__(self, cache: KVCache, slots: torch.Tensor, block_tables: torch.Tensor,
                 context_lens: torch.Tensor, windows: tuple[int | None, ...], scale: float,
                 backend: str = "auto"):
        self.cache, self.slots, self.block_tables = cache, slots, block_tables
        self.context_lens, self.windows, self.scale, self.backend = context_lens, windows, scale, backend

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.cache.store(layer, self.slots, k, v)
        o = paged_decode(q, self.cache.data[layer, 0], self.cache.data[layer, 1], self.block_tables,
                         self.context_lens, self.scale, self.windows[layer], backend=self.backend)
        return o.flatten(1)
