"""Continuous-batching scheduler: which sequences run, in which row, and who gets KV blocks.

Policy only; it never touches tensors. Each step is either a prefill (admit waiting prompts under a
token budget; each admitted prompt forks into its n samples, which share the prompt's blocks) or
a decode (every running sequence produces one token). Running sequences occupy rows 0..B-1 of the
runner's per-row buffers; when one leaves, the last row moves into the hole, and the scheduler
reports that move so the runner can copy the row's state. When a decode step needs a block and
none is free, the most recently admitted sequence is preempted: its blocks are freed and it goes
back to the front of the queue, to be recomputed later (same tokens: sampling is counter-based).

    sched = Scheduler(block_manager, SchedulerConfig(max_num_seqs=256))
    step = sched.schedule(runner.rows_starting_block)   # a PrefillStep or a DecodeStep
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable

from reversalkit.config import Config, check, option
from reversalkit.engine.sequence import SeqStatus, Sequence

_MASK64 = (1 << 64) - 1


@dataclasses.dataclass
class SchedulerConfig(Config):
    max_num_seqs: int = option(256, "sequences decoded together at most (rows of the batch)")
    max_num_batched_tokens: int = option(4096, "new tokens in one prefill step at most")
    refill_fraction: float = option(
        0.125, "while sequences run, prefill only once this fraction of rows is free: each prefill is a "
        "separate forward pass, so refilling one row at a time would cost a step per admission")
    watermark_blocks: int = option(0, "blocks kept free when admitting, to delay preemption")

    def __post_init__(self):
        check(self.max_num_seqs >= 1, f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        check(self.max_num_batched_tokens >= 1,
              f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")
        check(0 <= self.refill_fraction <= 1,
              f"refill_fraction must be in [0, 1], got {self.refill_fraction}")
        check(self.watermark_blocks >= 0, f"watermark_blocks must be >= 0, got {self.watermark_blocks}")


@dataclasses.dataclass
class Admission:
    """Result of admitting prefilled prompts: the new running sequences (rows first_row..), the
    index of each one's prompt in the prefill batch, and KV block copies (src -> dst) to make."""

    children: list[Sequence]
    parent_index: list[int]
    first_row: int
    copy_src: list[int]
    copy_dst: list[int]


@dataclasses.dataclass
class PrefillStep:
    """Compute the prompts `parents` (their blocks allocated), then sample the first token of each
    admitted sample: `admission.children`, rows admission.first_row.. ."""

    parents: list[Sequence]
    admission: Admission

    @property
    def seqs(self) -> list[Sequence]:
        return self.admission.children

    @property
    def first_row(self) -> int:
        return self.admission.first_row


@dataclasses.dataclass
class DecodeStep:
    """Apply the row moves (src, dst) and block assignments (row, index in table, block), then
    decode one token for every running sequence, rows 0..len(seqs)-1. `seqs` is the scheduler's
    running list itself: `postprocess` removes the samples that finish from it."""

    seqs: list[Sequence]
    moves: list[tuple[int, int]]
    block_updates: list[tuple[int, int, int]]
    first_row: int = 0


class Scheduler:
    def __init__(self, block_manager, config: SchedulerConfig | None = None):
        self.bm = block_manager
        self.block_size = block_manager.block_size
        self.cfg = config or SchedulerConfig()
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self._next_id = 0

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def add(self, seq: Sequence) -> None:
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def wants_prefill(self) -> bool:
        if not self.waiting:
            return False
        free_rows = self.cfg.max_num_seqs - len(self.running)
        head = self.waiting[0].num_children
        if not self.running:
            return True
        return free_rows >= max(head, int(self.cfg.refill_fraction * self.cfg.max_num_seqs))

    def schedule(self, rows_starting_block: Callable[[int], list[int]]) -> PrefillStep | DecodeStep:
        """The next step: a prefill when rows are free for the head of the queue and its blocks fit,
        else a decode of every running sequence. rows_starting_block(B) lists the rows among 0..B-1
        whose next token starts a new KV block (the runner knows their positions)."""
        if self.wants_prefill():
            batch = self.schedule_prefill()
            if batch:
                return PrefillStep(batch, self.admit(batch))
            if not self.running:
                raise RuntimeError("the next waiting prompt does not fit in the free KV blocks although "
                                   "nothing else runs; raise kv_cache_memory")
        moves, updates = self.prepare_decode(rows_starting_block(len(self.running)))
        return DecodeStep(self.running, moves, updates)

    # ---- prefill ----
    def schedule_prefill(self) -> list[Sequence]:
        """Pop and allocate waiting sequences that fit (rows, tokens, blocks). Their prompts still
        have to be computed; `admit` turns them into running samples afterwards."""
        batch: list[Sequence] = []
        tokens = 0
        rows = len(self.running)
        bs = self.block_size
        while self.waiting:
            seq = self.waiting[0]
            if rows + seq.num_children > self.cfg.max_num_seqs:
                break
            partial = 1 if seq.num_tokens % bs else 0
            blocks = -(-seq.num_tokens // bs) + (seq.num_children - 1) * partial
            if blocks + self.cfg.watermark_blocks > self.bm.num_free():
                break
            table, cached = self.bm.allocate(seq.token_ids)
            new_tokens = seq.num_tokens - cached
            if batch and tokens + new_tokens > self.cfg.max_num_batched_tokens:
                self.bm.free(table)
                break
            seq.block_table, seq.num_cached_tokens = table, cached
            self.waiting.popleft()
            batch.append(seq)
            tokens += new_tokens
            rows += seq.num_children
        return batch

    def seal(self, seq: Sequence, first_block: int, end_block: int) -> None:
        """Register the hashes of blocks [first_block, end_block) of a sequence (all computed)."""
        bs, table, ids = self.block_size, seq.block_table, seq.token_ids
        for i in range(first_block, end_block):
            self.bm.seal(table[i], table[i - 1] if i else -1, ids[i * bs:(i + 1) * bs])

    def admit(self, batch: list[Sequence]) -> Admission:
        """After the prefill of `batch`: seal its full blocks, fork each into its samples, and give
        every sample a row."""
        bs = self.block_size
        first_row = len(self.running)
        out = Admission([], [], first_row, [], [])
        for pi, seq in enumerate(batch):
            self.seal(seq, seq.num_cached_tokens // bs, seq.num_tokens // bs)
            kids = [seq]
            for j in range(1, seq.num_children):
                table, src, dst = self.bm.fork(seq.block_table, seq.num_tokens)
                if src >= 0:
                    out.copy_src.append(src)
                    out.copy_dst.append(dst)
                kids.append(dataclasses.replace(
                    seq, seq_id=self.new_id(), sample_index=seq.sample_index + j,
                    token_ids=list(seq.token_ids), block_table=table, num_children=1,
                    rng_key=(seq.rng_key + j) & _MASK64,
                    token_logprobs=None if seq.token_logprobs is None else list(seq.token_logprobs)))
            seq.num_children = 1
            for kid in kids:
                kid.status = SeqStatus.RUNNING
                self.running.append(kid)
                out.children.append(kid)
                out.parent_index.append(pi)
        return out

    # ---- decode ----
    def _remove(self, row: int, moves: list[tuple[int, int]]) -> Sequence:
        seq = self.running[row]
        last = len(self.running) - 1
        if row != last:
            self.running[row] = self.running[last]
            moves.append((last, row))
        self.running.pop()
        return seq

    def _preempt(self, row: int, moves: list[tuple[int, int]]) -> Sequence:
        seq = self._remove(row, moves)
        self.bm.free(seq.block_table)
        seq.block_table, seq.num_cached_tokens = [], 0
        seq.status = SeqStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1
        return seq

    def needs_block(self) -> list[int]:
        """Rows whose next token starts a new block (the runner finds them faster from positions)."""
        bs = self.block_size
        return [r for r, s in enumerate(self.running) if (s.num_tokens - 1) % bs == 0]

    def prepare_decode(self, needy_rows: list[int] | None = None
                       ) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]]:
        """Give the running sequences in `needy_rows` (default: needs_block()) the block their next
        token needs, preempting the most recent admissions when blocks run out. Returns row moves
        (src, dst), to apply first, and block assignments (row, index in table, block)."""
        moves: list[tuple[int, int]] = []
        if needy_rows is None:
            needy_rows = self.needs_block()
        if not needy_rows:
            return moves, []
        needy = [self.running[r] for r in needy_rows]
        needy.sort(key=lambda s: s.seq_id)
        granted: list[Sequence] = []
        for seq in needy:
            if seq.status is not SeqStatus.RUNNING:
                continue  # preempted to make room for an older one
            while self.bm.num_free() == 0:
                victim = max(range(len(self.running)), key=lambda r: self.running[r].seq_id)
                if self._preempt(victim, moves) is seq:
                    break
            if seq.status is not SeqStatus.RUNNING:
                continue
            seq.block_table.append(self.bm.allocate_block())
            granted.append(seq)
        row_of = {id(s): r for r, s in enumerate(self.running)} if moves else None
        updates = []
        for seq in granted:
            if seq.status is SeqStatus.RUNNING:
                row = row_of[id(seq)] if row_of is not None else self.running.index(seq)
                updates.append((row, len(seq.block_table) - 1, seq.block_table[-1]))
        return moves, updates

    def postprocess(self, first_row: int, tokens: list[int], logprobs: list[float] | None,
                    finished: dict[int, str], seal: list[int]
                    ) -> tuple[list[Sequence], list[tuple[int, int]]]:
        """Append one sampled token to each of rows first_row.. (in order). `seal` lists row offsets
        whose input token just filled its block (decode steps); `finished` maps row offsets to their
        finish reason ("stop" or "length"). Returns the finished sequences and the row moves their
        removal caused."""
        bs = self.block_size
        rows = self.running[first_row:first_row + len(tokens)]
        for i in seal:
            seq = rows[i]
            k = len(seq.token_ids) // bs - 1
            self.bm.seal(seq.block_table[k], seq.block_table[k - 1] if k else -1, seq.token_ids[-bs:])
        for seq, tok in zip(rows, tokens):
            seq.token_ids.append(tok)
        if logprobs is not None:
            for seq, lp in zip(rows, logprobs):
                seq.cumulative_logprob += lp
                seq.token_logprobs.append(lp)
        moves: list[tuple[int, int]] = []
        done = []
        for i in sorted(finished, reverse=True):
            seq = self._remove(first_row + i, moves)
            self.bm.free(seq.block_table)
            seq.block_table = []
            seq.status = SeqStatus.FINISHED
            seq.finish_reason = finished[i]
            done.append(seq)
        return done, moves
