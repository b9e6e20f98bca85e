"""KV-cache block allocator of the paged sampler.

Blocks have reference counts; full blocks get a chained hash (FNV-1a over the token ids, started
from the previous block's hash, then a splitmix64 finalizer), so that prompts sharing a prefix
share its KV blocks. A block is free (perhaps still cached: it keeps its hash, so a later prompt can
reuse its KV), then referenced by one or more block tables, then free again when its last
reference goes. Free blocks form one list: blocks without a hash are handed out first, cached ones
last and oldest-first, so the cache keeps recently used prefixes.

Pure Python: its calls cost 0.3-0.5% of a CPU sampling run's time (a C++ twin saved 0.1-0.2% of
it, see benchmarks/RESULTS.md), so it has no native version.

    bm = BlockManager(num_blocks=1024, block_size=16)
    table, num_cached = bm.allocate(prompt_ids)
"""

from __future__ import annotations

from collections import OrderedDict

MASK64 = (1 << 64) - 1
HASH_SEED = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


def chain_hash(prev: int, tokens: list[int]) -> int:
    """Hash of one full block chained on the previous block's hash (same as the C++ one)."""
    h = prev
    for t in tokens:
        h = ((h ^ (t & MASK64)) * _FNV_PRIME) & MASK64
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & MASK64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & MASK64
    h ^= h >> 31
    return h


class BlockManager:
    """Reference-counted KV blocks with a prefix cache of sealed (hashed) full blocks."""

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}")
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.reset()

    def reset(self) -> None:
        """Forget every cached hash and free every block (after the weights change)."""
        self._ref = [0] * self.num_blocks
        self._hash: list[int | None] = [None] * self.num_blocks
        self._tokens: list[list[int] | None] = [None] * self.num_blocks
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(self.num_blocks))
        self._cache: dict[int, int] = {}

    def num_free(self) -> int:
        return len(self._free)

    def _check(self, block: int, what: str) -> None:
        if not 0 <= block < self.num_blocks:
            raise IndexError(f"{what}: block {block} outside [0, {self.num_blocks})")

    def _take_free(self) -> int:
        if not self._free:
            raise RuntimeError("out of KV blocks: every block is in use")
        b, _ = self._free.popitem(last=False)
        h = self._hash[b]
        if h is not None:
            if self._cache.get(h) == b:
                del self._cache[h]
            self._hash[b] = None
            self._tokens[b] = None
        self._ref[b] = 1
        return b

    def allocate(self, token_ids: list[int]) -> tuple[list[int], int]:
        """Block table for a prompt -> (table, number of cached tokens). Full blocks found in the
        cache (same chained hash, same tokens) are shared, the rest are fresh; the block holding
        the last token never comes from the cache, so at least one token is left to compute.
        RuntimeError when fewer than ceil(len / block_size) blocks are free."""
        bs = self.block_size
        n = len(token_ids)
        needed = -(-n // bs)
        if needed > len(self._free):
            raise RuntimeError(
                f"out of KV blocks: a prompt of {n} tokens needs {needed} blocks, {len(self._free)} are free")
        table: list[int] = []
        cached = 0
        h = HASH_SEED
        missed = False
        for i in range(needed):
            start = i * bs
            if not missed and start + bs <= n - 1:  # never reuse the block holding the last token
                chunk = list(token_ids[start:start + bs])
                h = chain_hash(h, chunk)
                b = self._cache.get(h)
                if b is not None and self._tokens[b] == chunk:
                    if self._ref[b] == 0:
                        del self._free[b]
                    self._ref[b] += 1
                    table.append(b)
                    cached += bs
                    continue
                missed = True
            table.append(self._take_free())
        return table, cached

    def allocate_block(self) -> int:
        """One fresh block (reference count 1, no hash) from the head of the free list."""
        return self._take_free()

    def seal(self, block: int, prev_block: int, tokens: list[int]) -> None:
        """Register the hash of a block whose block_size tokens are computed. prev_block is the
        block before it in the same table (-1 for the first) and must already be sealed."""
        self._check(block, "seal")
        if len(tokens) != self.block_size:
            raise ValueError(f"seal: a block holds {self.block_size} tokens, got {len(tokens)}")
        if self._ref[block] == 0:
            raise RuntimeError(f"seal: block {block} is free")
        prev = HASH_SEED
        if prev_block >= 0:
            self._check(prev_block, "seal")
            if self._hash[prev_block] is None:
                raise RuntimeError(f"seal: previous block {prev_block} is not sealed")
            prev = self._hash[prev_block]
        h = chain_hash(prev, tokens)
        if self._hash[block] is not None:
            if self._hash[block] == h:
                return
            raise RuntimeError(f"seal: block {block} is already sealed with other tokens")
        self._hash[block] = h
        self._tokens[block] = list(tokens)
        self._cache[h] = block

    def fork(self, table: list[int], num_tokens: int) -> tuple[list[int], int, int]:
        """A second table sharing every full block of `table` (num_tokens tokens) -> (table, src,
        dst). A partial last block cannot be shared (both sequences append to it): it is replaced
        by a fresh block dst, and the caller copies the KV of src into it; src = dst = -1 else."""
        bs = self.block_size
        expected = -(-num_tokens // bs)
        if num_tokens <= 0 or len(table) != expected:
            raise ValueError(
                f"fork: a table for {num_tokens} tokens has {expected} blocks, got {len(table)}")
        partial = num_tokens % bs != 0
        if partial and not self._free:
            raise RuntimeError("out of KV blocks: fork needs one free block")
        for b in table:
            self._check(b, "fork")
            if self._ref[b] == 0:
                raise RuntimeError(f"fork: block {b} is free")
        out = list(table)
        for b in table[:-1] if partial else table:
            self._ref[b] += 1
        if not partial:
            return out, -1, -1
        dst = self._take_free()
        out[-1] = dst
        return out, table[-1], dst

    def free(self, table: list[int]) -> None:
        """Drop one reference to every block of the table (last block first)."""
        for b in table:
            self._check(b, "free")
            if self._ref[b] <= 0:
                raise RuntimeError(f"free: block {b} is already free")
        for b in reversed(table):
            self._ref[b] -= 1
            if self._ref[b] == 0:
                self._free[b] = None
                if self._hash[b] is None:
                    self._free.move_to_end(b, last=False)

    def ref_count(self, block: int) -> int:
        self._check(block, "ref_count")
        return self._ref[block]

    def has_hash(self, block: int) -> bool:
        self._check(block, "has_hash")
        return self._hash[block] is not None

    def block_hash(self, block: int) -> int:
        self._check(block, "block_hash")
        if self._hash[block] is None:
            raise RuntimeError(f"block {block} has no hash")
        return self._hash[block]

