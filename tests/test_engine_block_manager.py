"""KV block manager: prefix sharing, forks, free-list order, errors, the pinned chain hash, and
reference counts that match the live tables over random operation sequences."""

import random

import pytest

from reversalkit.engine.block_manager import HASH_SEED, BlockManager, chain_hash


def test_prefix_blocks_are_shared_after_sealing():
    bm = BlockManager(16, 4)
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
    bm = BlockManager(8, 4)
    a = list(range(8))
    t, _ = bm.allocate(a)
    bm.seal(t[0], -1, a[:4])
    bm.seal(t[1], t[0], a[4:])
    t2, cached = bm.allocate(a)  # identical prompt: its last block must be recomputed
    assert cached == 4 and t2[0] == t[0] and t2[1] != t[1]


def test_fork_copies_only_a_partial_last_block():
    bm = BlockManager(8, 4)
    t, _ = bm.allocate(list(range(6)))
    new, src, dst = bm.fork(t, 6)
    assert new[0] == t[0] and src == t[1] and dst not in t and new[1] == dst
    assert bm.ref_count(t[0]) == 2 and bm.ref_count(t[1]) == 1
    t8, _ = bm.allocate(list(range(8)))
    new8, src8, dst8 = bm.fork(t8, 8)
    assert new8 == t8 and src8 == dst8 == -1 and all(bm.ref_count(b) == 2 for b in t8)


def test_free_list_order_keeps_cached_blocks_longest():
    bm = BlockManager(4, 2)
    t, _ = bm.allocate([1, 2, 3, 4])
    bm.seal(t[0], -1, [1, 2])
    bm.free(t)  # t[1] (no hash) goes to the head, t[0] (cached) to the tail
    order = [bm.allocate_block() for _ in range(4)]
    assert order[0] == t[1] and order[-1] == t[0]


def test_errors_are_actionable():
    bm = BlockManager(2, 4)
    with pytest.raises(RuntimeError, match="out of KV blocks"):
        bm.allocate(list(range(12)))
    t, _ = bm.allocate([1, 2, 3])
    with pytest.raises(ValueError, match="holds 4 tokens"):
        bm.seal(t[0], -1, [1, 2])
    bm.free(t)
    with pytest.raises(RuntimeError, match="already free"):
        bm.free(t)
    with pytest.raises(ValueError):
        BlockManager(0, 4)


def test_chain_hash_is_pinned():
    """Values recorded from the hash's first implementation: a change would silently drop every
    cached prefix of a resumed process and break agreement with stored hashes."""
    assert chain_hash(HASH_SEED, [1, 2]) == 8283589274834865722
    assert chain_hash(HASH_SEED, list(range(16))) == 5613986587669210814
    assert chain_hash(123456789, [(1 << 40) - 1, 0, 7]) == 9308376504440864142


def _check_refs(bm, live, num_blocks):
    """Every block's reference count is the number of live tables holding it; the rest are free."""
    want = [0] * num_blocks
    for table, _ in live:
        for b in table:
            want[b] += 1
    assert [bm.ref_count(b) for b in range(num_blocks)] == want
    assert bm.num_free() == want.count(0)


def _random_ops(rng, bm, num_blocks, bs, steps):
    """Random allocate / fork / append / free, as the scheduler issues them, checking the reference
    counts after each and that a cached prefix is only ever reused with its tokens."""
    live = []  # (table, tokens) of sequences holding references
    vocab = [rng.choices(range(5), k=rng.randint(1, 3 * bs)) for _ in range(3)]  # shared prefixes
    owner = {}  # sealed block -> the tokens it was sealed with
    for _ in range(steps):
        op = rng.random()
        if live and bm.num_free() < num_blocks // 4 and rng.random() < 0.6:
            op = 1.0  # mostly free when the pool runs low, so allocations do not just fail
        if op < 0.35 or not live:
            toks = list(rng.choice(vocab)) + rng.choices(range(5), k=rng.randint(1, 2 * bs))
            try:
                table, cached = bm.allocate(toks)
            except RuntimeError as e:
                assert "out of KV blocks" in str(e) and bm.num_free() < -(-len(toks) // bs)
                continue
            assert cached % bs == 0 and cached < len(toks) and len(table) == -(-len(toks) // bs)
            for i in range(cached // bs):
                assert owner[table[i]] == toks[i * bs:(i + 1) * bs]
            for b in table[cached // bs:]:
                owner.pop(b, None)  # fresh blocks carry no hash
            # seal the computed full blocks, like the scheduler after a prefill
            for i in range(cached // bs, len(toks) // bs):
                bm.seal(table[i], table[i - 1] if i else -1, toks[i * bs:(i + 1) * bs])
                owner[table[i]] = toks[i * bs:(i + 1) * bs]
            live.append((list(table), toks))
        elif op < 0.55:
            table, toks = rng.choice(live)
            try:
                forked, src, dst = bm.fork(table, len(toks))
            except RuntimeError:
                assert bm.num_free() == 0
                continue
            assert (src, dst) == ((-1, -1) if len(toks) % bs == 0 else (table[-1], forked[-1]))
            owner.pop(dst, None)
            live.append((list(forked), list(toks)))
        elif op < 0.75:
            i = rng.randrange(len(live))
            table, toks = live[i]
            if len(toks) % bs == 0:  # the next token needs a fresh block
                if bm.num_free() == 0:
                    continue
                table.append(bm.allocate_block())
                owner.pop(table[-1], None)  # a fresh block carries no hash
                assert not bm.has_hash(table[-1])
            toks.append(rng.randrange(5))
            if len(toks) % bs == 0:
                k = len(toks) // bs - 1
                bm.seal(table[k], table[k - 1] if k else -1, toks[-bs:])
                owner[table[k]] = toks[-bs:]
        else:
            table, _ = live.pop(rng.randrange(len(live)))
            bm.free(table)
        _check_refs(bm, live, num_blocks)
    for table, _ in live:
        bm.free(table)
    assert bm.num_free() == num_blocks


@pytest.mark.parametrize("seed", range(6))
def test_reference_counts_follow_random_operations(seed):
    rng = random.Random(seed)
    num_blocks, bs = rng.choice([(12, 2), (24, 4), (40, 3)])
    bm = BlockManager(num_blocks, bs)
    _random_ops(rng, bm, num_blocks, bs, steps=300)
    bm.reset()
    assert bm.num_free() == num_blocks and not any(bm.has_hash(b) for b in range(num_blocks))
