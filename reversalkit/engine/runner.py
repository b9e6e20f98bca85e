"""Model runner: owns the KV cache and the per-row decode state, runs the scheduler's steps on the
model and samples their tokens.

    runner.begin(prefix_table, prefix_len, max_total_len)   # once per generate() call
    out = runner.run(step, sampler)                         # step: scheduler.PrefillStep | DecodeStep
    runner.apply_moves(moves)                               # rows vacated by finished samples

Row state (one entry per running sequence, rows 0..B-1, moved when the scheduler compacts rows):
`row_tokens` the token to feed next, `row_pos` its position, `block_tables` the sequence's KV
blocks, `row_keys` / `row_gen` its sampling stream and draw counter, `row_limit` its length limit.
A decode step therefore builds no per-sequence Python structures: it slices these buffers. They are
the runner's own: the engine sees only `StepOutput`s and `rows_starting_block`.

Decode backends: "rows" (CPU: contiguous per-row KV + cascade over the shared prefix, see
rows.py; decoded tokens are not written to the paged cache, so `seals_decoded` is False),
"triton" (CUDA paged kernel, replayed as CUDA graphs: cuda_graphs.py), "reference" (gather-based
torch, any device).
"""

from __future__ import annotations

import dataclasses

import torch

from reversalkit.engine.attention import (
    KVCache,
    PagedDecodeAttention,
    PrefillAttention,
    PrefillSeq,
    context_slots,
)
from reversalkit.engine.cuda_graphs import DecodeGraphs
from reversalkit.engine.model import LlamaFamilyModel
from reversalkit.engine.rows import RowDecodeAttention, RowKV
from reversalkit.engine.sampling import Sampler
from reversalkit.engine.scheduler import Admission, DecodeStep, PrefillStep
from reversalkit.engine.sequence import Sequence
from reversalkit.kernels.sample_top_p import as_int64

DECODE_BACKENDS = ("auto", "rows", "triton", "reference")


@dataclasses.dataclass
class StepOutput:
    """The tokens one step sampled for rows first_row.. of the step, in row order (offsets below
    count from first_row)."""

    tokens: torch.Tensor  # (k,) int64 on the model's device
    token_list: list[int]  # the same tokens on the host
    logprobs: list[float] | None  # (k,) log-probabilities under the model, when asked for
    at_limit: list[int]  # offsets whose sampled token reaches the sample's length limit
    seal: list[int]  # offsets whose decoded input token filled its block in the paged cache


class ModelRunner:
    def __init__(self, model: LlamaFamilyModel, *, num_blocks: int, block_size: int, max_rows: int,
                 decode_backend: str = "auto", cuda_graphs: bool = True):
        if decode_backend not in DECODE_BACKENDS:
            raise ValueError(f"decode_backend must be one of {DECODE_BACKENDS}, got {decode_backend!r}")
        s = model.spec
        dev = model.device
        if decode_backend == "auto":
            decode_backend = "triton" if dev.type == "cuda" else "rows"
        if decode_backend == "rows" and dev.type != "cpu":
            raise ValueError("decode_backend 'rows' is the CPU path; use 'triton' or 'reference' on "
                             f"{dev.type}")
        self.model, self.backend, self.block_size = model, decode_backend, block_size
        self.seals_decoded = decode_backend != "rows"  # decoded KV lands in the paged cache
        # one block more than the block manager hands out: CUDA graphs park idle rows on it
        self.cache = KVCache(s.num_layers, num_blocks + 1, block_size, s.num_kv_heads, s.head_dim,
                             device=dev, dtype=model.dtype)
        self.max_rows = max_rows
        self.max_blocks = -(-s.max_position // block_size)
        self.row_tokens = torch.zeros(max_rows, dtype=torch.int64, device=dev)
        self.row_pos = torch.zeros(max_rows, dtype=torch.int64, device=dev)
        self.row_keys = torch.zeros(max_rows, dtype=torch.int64, device=dev)  # sampling stream (uint64 bits)
        self.row_gen = torch.zeros(max_rows, dtype=torch.int64, device=dev)  # tokens generated so far
        self.row_limit = torch.zeros(max_rows, dtype=torch.int64, device=dev)  # length that ends the sample
        self.block_tables = torch.zeros(max_rows, self.max_blocks, dtype=torch.int32, device=dev)
        self.rows: RowKV | None = None
        self.prefix_len = 0
        self.use_flash = dev.type == "cuda"
        self._paged_backend = "torch" if decode_backend == "reference" else "triton"  # paged_decode's
        self.graphs = None
        if cuda_graphs and dev.type == "cuda" and decode_backend != "rows":
            self.graphs = DecodeGraphs(max_rows, scratch_block=num_blocks)

    def _table(self, table: list[int]) -> torch.Tensor:
        return torch.tensor(table, dtype=torch.int64, device=self.model.device)

    def begin(self, prefix_table: list[int], prefix_len: int, max_total_len: int,
              max_prompt_len: int | None = None) -> None:
        """Prepare a generate() call: every sequence starts with the prefix_len tokens of the
        blocks in prefix_table, is at most max_total_len tokens long, and its prompt at most
        max_prompt_len (None: max_total_len; the CPU rows keep that much room per sample group)."""
        self.prefix_len = prefix_len
        if self.backend != "rows":
            return
        s = self.model.spec
        tail = max_total_len - prefix_len
        group_tail = (max_total_len if max_prompt_len is None else max_prompt_len) - prefix_len
        if self.rows is None or not self.rows.fits(self.max_rows, tail, self.model.dtype, group_tail):
            self.rows = None  # free the old buffers before allocating
            self.rows = RowKV(s.num_layers, self.max_rows, s.num_kv_heads, s.head_dim, tail, self.model.dtype,
                              group_tail=group_tail)
        slots = context_slots(self._table(prefix_table), prefix_len, self.block_size) if prefix_len else \
            torch.zeros(0, dtype=torch.int64)
        self.rows.set_prefix(self.cache, slots)

    @torch.inference_mode()
    def prefill(self, seqs: list[Sequence]) -> torch.Tensor:
        """Compute the uncached tokens of each sequence -> last-token logits (P, V) float32."""
        dev = self.model.device
        ids, pos, slots, metas = [], [], [], []
        start = 0
        for seq in seqs:
            n, c = seq.num_tokens, seq.num_cached_tokens
            ctx = context_slots(self._table(seq.block_table), n, self.block_size)
            ids.extend(seq.token_ids[c:])
            pos.append(torch.arange(c, n, device=dev))
            slots.append(ctx[c:])
            metas.append(PrefillSeq(start, n - c, n, ctx))
            start += n - c
        attend = PrefillAttention(self.cache, metas, torch.cat(slots), self.model.spec.windows,
                                  self.model.scale, use_flash=self.use_flash)
        x = self.model.hidden_states(torch.tensor(ids, device=dev), torch.cat(pos), attend)
        last = torch.tensor([m.q_start + m.q_len - 1 for m in metas], device=dev)
        return self.model.logits(x[last])

    @torch.inference_mode()
    def init_rows(self, adm: Admission, parents: list[Sequence]) -> None:
        """Row state of freshly admitted samples; call after copying the forked blocks."""
        r0 = adm.first_row
        k = len(adm.children)
        tables = torch.zeros(k, self.max_blocks, dtype=torch.int32)
        for i, kid in enumerate(adm.children):
            tables[i, :len(kid.block_table)] = torch.tensor(kid.block_table, dtype=torch.int32)
        dev = self.model.device
        self.block_tables[r0:r0 + k] = tables.to(dev)
        self.row_pos[r0:r0 + k] = torch.tensor([kid.num_tokens for kid in adm.children], device=dev)
        self.row_keys[r0:r0 + k] = torch.tensor([as_int64(kid.rng_key) for kid in adm.children], device=dev)
        self.row_gen[r0:r0 + k] = torch.tensor([kid.num_generated for kid in adm.children], device=dev)
        self.row_limit[r0:r0 + k] = torch.tensor([kid.max_tokens for kid in adm.children], device=dev)
        if self.rows is None:
            return
        i = 0
        while i < k:  # samples of one prompt are contiguous and share their KV so far
            j = i
            while j < k and adm.parent_index[j] == adm.parent_index[i]:
                j += 1
            parent = parents[adm.parent_index[i]]
            ctx = context_slots(self._table(parent.block_table), parent.num_tokens, self.block_size)
            self.rows.fill(self.cache, slice(r0 + i, r0 + j), ctx[self.prefix_len:])
            i = j

    def apply_moves(self, moves: list[tuple[int, int]]) -> None:
        """Apply the scheduler's row moves (src, dst), in order, as one gather per buffer: a row
        moved twice (into a hole, then out of it) is read from where it started."""
        if not moves:
            return
        origin: dict[int, int] = {}
        for src, dst in moves:
            origin[dst] = origin.get(src, src)
        dev = self.row_pos.device
        dst = torch.tensor(list(origin), dtype=torch.int64, device=dev)
        src = torch.tensor(list(origin.values()), dtype=torch.int64, device=dev)
        if self.rows is not None:
            self.rows.move(src, dst, self.row_pos[src] - self.prefix_len)
        for buf in (self.row_tokens, self.row_pos, self.row_keys, self.row_gen, self.row_limit,
                    self.block_tables):
            buf[dst] = buf[src]

    def rows_starting_block(self, B: int) -> list[int]:
        """Rows among 0..B-1 whose next token is the first of a new KV block."""
        return (self.row_pos[:B] % self.block_size == 0).nonzero().flatten().tolist()

    def reset_graphs(self) -> None:
        """Drop captured CUDA graphs (they read the weight tensors they were captured with)."""
        if self.graphs is not None:
            self.graphs.reset()

    def run(self, step: PrefillStep | DecodeStep, sampler: Sampler) -> StepOutput:
        """Execute one scheduled step and sample a token for each of its rows."""
        if isinstance(step, PrefillStep):
            logits = self.prefill(step.parents)  # (P, V)
            adm = step.admission
            self.cache.copy_blocks(adm.copy_src, adm.copy_dst)
            self.init_rows(adm, step.parents)
            if len(adm.children) != len(step.parents):
                logits = logits[torch.tensor(adm.parent_index, device=logits.device)]
            return self._sample(sampler, logits, adm.first_row, decode=False)
        self.apply_moves(step.moves)
        self.set_blocks(step.block_updates)
        return self._sample(sampler, self.decode(len(step.seqs)), 0, decode=True)

    def _sample(self, sampler: Sampler, logits: torch.Tensor, first_row: int, decode: bool) -> StepOutput:
        """Sample rows first_row.. from logits (k, V) and advance their row state."""
        rows = slice(first_row, first_row + logits.shape[0])
        tokens, logprobs = sampler(logits, self.row_keys[rows], self.row_gen[rows])
        self.row_tokens[rows] = tokens
        self.row_gen[rows] += 1
        pos = self.row_pos[rows]  # position of the sampled token
        at_limit = (pos + 1 >= self.row_limit[rows]).nonzero().flatten().tolist()
        seal = []  # the decoded input token completed its block, and its KV is in the paged cache
        if decode and self.seals_decoded:
            seal = (pos % self.block_size == 0).nonzero().flatten().tolist()
        return StepOutput(tokens, tokens.tolist(), None if logprobs is None else logprobs.tolist(),
                          at_limit, seal)

    def set_blocks(self, updates: list[tuple[int, int, int]]) -> None:
        for row, idx, block in updates:
            self.block_tables[row, idx] = block

    def forward_decode(self, B: int) -> torch.Tensor:
        """The decode forward of rows 0..B-1 (what a CUDA graph captures) -> logits (B, V)."""
        pos = self.row_pos[:B]
        m = self.model
        if self.backend == "rows":
            attend = RowDecodeAttention(self.rows, pos, m.spec.windows, m.scale)
        else:
            bs = self.block_size
            blocks = self.block_tables[:B].gather(1, (pos // bs).unsqueeze(1)).squeeze(1)
            slots = blocks.long() * bs + pos % bs
            attend = PagedDecodeAttention(self.cache, slots, self.block_tables[:B], (pos + 1).int(),
                                          m.spec.windows, m.scale, self._paged_backend)
        return m.logits(m.hidden_states(self.row_tokens[:B], pos, attend))

    @torch.inference_mode()
    def decode(self, B: int) -> torch.Tensor:
        """One token for rows 0..B-1 -> logits (B, V) float32; advances their positions."""
        logits = self.graphs(self, B) if self.graphs is not None else None
        if logits is None:
            logits = self.forward_decode(B)
        self.row_pos[:B] += 1
        return logits
