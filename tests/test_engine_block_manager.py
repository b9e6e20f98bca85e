"""KV block manager: semantics of the Python mirror, and the C++ allocator agreeing with it on
random operation sequences."""

import random

import pytest

from reversalkit._ext import native
from reversalkit.engine.block_manager import HASH_SEED, PyBlockManager, chain_hash, make_block_manager


def native_cls():
    ext = native()
    assert ext is not None and hasattr(ext, "BlockManager"), \
        "reversalkit._C.BlockManager is not built: run `pip install -e .` (needs a C++17 compiler)"
    return ext.BlockManager


def test_prefix_blocks_are_shared_after_sealing():
    bm = PyBlockManager(16, 4)
    a = list(range(10))  # 2 full blocks + 2 tokens
    t1, c1 = bm.allocate(a)
    assert c1 == 0 and len(t1) == 3
    bm.seal(t1[0], -1, a[0:4])
    bm.seal(t1[1], t1[0], a[4:8])
    t2, c2 = bm.allocate(a[:8] + [99, 98, 97])
    assert c2 == 8 and t2[:2] == t1[:2] and t2[2] != t1[2]
    assert bm.ref_count(t1[0]) == 2 and bm.ref_count(t1[2]) == 1
    # a different first block breaks the chain even when the second block's tokens match
    t3, c3 = bm.allocate([7, 7, 7, 7] + a[4:8] + [1])
    assert c3 == 0 and t3[1] != t1[1]


def test_block_holding_the_last_token_is_never_reused():
    bm = PyBlockManager(8, 4)
    a = list(range(8))
    t, _ = bm.allocate(a)
    bm.seal(t[0], -1, a[:4])
    bm.seal(t[1], t[0], a[4:])
    t2, cached = bm.allocate(a)  # identical prompt: its last block must be recomputed
    assert cached == 4 and t2[0] == t[0] and t2[1] != t[1]


def test_fork_copies_only_a_partial_last_block():
    bm = PyBlockManager(8, 4)
    t, _ = bm.allocate(list(range(6)))
    new, src, dst = bm.fork(t, 6)
    assert new[0] == t[0] and src == t[1] and dst not in t and new[1] == dst
    assert bm.ref_count(t[0]) == 2 and bm.ref_count(t[1]) == 1
    t8, _ = bm.allocate(list(range(8)))
    new8, src8, dst8 = bm.fork(t8, 8)
    assert new8 == t8 and src8 == dst8 == -1 and all(bm.ref_count(b) == 2 for b in t8)


def test_free_list_order_keeps_cached_blocks_longest():
    bm = PyBlockManager(4, 2)
    t, _ = bm.allocate([1, 2, 3, 4])
    bm.seal(t[0], -1, [1, 2])
    bm.free(t)  # t[1] (no hash) goes to the head, t[0] (cached) to the tail
    order = [bm.allocate_block() for _ in range(4)]
    assert order[0] == t[1] and order[-1] == t[0]


def test_errors_are_actionable():
    bm = PyBlockManager(2, 4)
    with pytest.raises(RuntimeError, match="out of KV blocks"):
        bm.allocate(list(range(12)))
    t, _ = bm.allocate([1, 2, 3])
    with pytest.raises(ValueError, match="holds 4 tokens"):
        bm.seal(t[0], -1, [1, 2])
    bm.free(t)
    with pytest.raises(RuntimeError, match="already free"):
        bm.free(t)
    with pytest.raises(ValueError):
        PyBlockManager(0, 4)


def test_chain_hash_matches_cpp():
    cls = native_cls()
    rng = random.Random(0)
    for _ in range(50):
        toks = [rng.randrange(0, 1 << 40) for _ in range(rng.randint(1, 20))]
        prev = rng.randrange(0, 1 << 64)
        assert cls.chain_hash(prev, toks) == chain_hash(prev, toks)
    assert cls.chain_hash(HASH_SEED, [1, 2]) == chain_hash(HASH_SEED, [1, 2])


def _state(bm, n):
    return ([bm.ref_count(b) for b in range(n)], [bm.has_hash(b) and bm.block_hash(b) for b in range(n)],
            bm.num_free())


def _random_ops(rng, py, cpp, num_blocks, bs, steps):
    """Drive both allocators with the same random operations; compare every result."""
    live = []  # (table, tokens) of sequences holding references
    vocab = [rng.choices(range(5), k=rng.randint(1, 3 * bs)) for _ in range(3)]  # shared prefixes
    for _ in range(steps):
        op = rng.random()
        if live and py.num_free() < num_blocks // 4 and rng.random() < 0.6:
            op = 1.0  # mostly free when the pool runs low, so allocations do not just fail
        if op < 0.35 or not live:
            toks = list(rng.choice(vocab)) + rng.choices(range(5), k=rng.randint(1, 2 * bs))
            res = []
            for bm in (py, cpp):
                try:
                    res.append(tuple(bm.allocate(toks)))
                except RuntimeError as e:
                    res.append(("err", "out of KV blocks" in str(e)))
            assert res[0] == res[1]
            if res[0][0] != "err":
                table, cached = res[0]
                # seal the computed full blocks, like the scheduler after a prefill
                for i in range(cached // bs, len(toks) // bs):
                    for bm in (py, cpp):
                        bm.seal(table[i], table[i - 1] if i else -1, toks[i * bs:(i + 1) * bs])
                live.append((list(table), toks))
        elif op < 0.55:
            table, toks = rng.choice(live)
            res = []
            for bm in (py, cpp):
                try:
                    res.append(tuple(bm.fork(table, len(toks))))
                except RuntimeError:
                    res.append("err")
            assert res[0] == res[1]
            if res[0] != "err":
                live.append((list(res[0][0]), list(toks)))
        elif op < 0.75:
            i = rng.randrange(len(live))
            table, toks = live[i]
            if len(toks) % bs == 0:  # the next token needs a fresh block
                if py.num_free() == 0:
                    continue
                b = [bm.allocate_block() for bm in (py, cpp)]
                assert b[0] == b[1]
                table.append(b[0])
            toks.append(rng.randrange(5))
            if len(toks) % bs == 0:
                k = len(toks) // bs - 1
                for bm in (py, cpp):
                    bm.seal(table[k], table[k - 1] if k else -1, toks[-bs:])
        else:
            table, _ = live.pop(rng.randrange(len(live)))
            py.free(table)
            cpp.free(table)
        assert _state(py, num_blocks) == _state(cpp, num_blocks)
    for table, _ in live:
        py.free(table)
        cpp.free(table)
    assert py.num_free() == cpp.num_free() == num_blocks


@pytest.mark.parametrize("seed", range(6))
def test_cpp_and_python_agree_on_random_operations(seed):
    cls = native_cls()
    rng = random.Random(seed)
    num_blocks, bs = rng.choice([(12, 2), (24, 4), (40, 3)])
    py, cpp = PyBlockManager(num_blocks, bs), cls(num_blocks, bs)
    _random_ops(rng, py, cpp, num_blocks, bs, steps=300)
    py.reset()
    cpp.reset()
    assert _state(py, num_blocks) == _state(cpp, num_blocks)


def test_make_block_manager_prefers_native():
    cls = native_cls()
    assert isinstance(make_block_manager(4, 2), cls)
    assert isinstance(make_block_manager(4, 2, prefer_native=False), PyBlockManager)
