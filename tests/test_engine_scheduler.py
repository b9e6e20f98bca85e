"""Scheduler policy on fake sequences (no model): admission limits, forking, row compaction,
preemption of the newest sequence when blocks run out."""

import pytest

from reversalkit.engine.block_manager import BlockManager
from reversalkit.engine.scheduler import Scheduler, SchedulerConfig
from reversalkit.engine.sequence import SeqStatus, Sequence


def seq(sched, tokens, n=1, max_tokens=100):
    return Sequence(seq_id=sched.new_id(), request_id=0, sample_index=0, token_ids=list(tokens),
                    num_prompt_tokens=len(tokens), max_tokens=max_tokens, rng_key=1, num_children=n)


def test_config_validation():
    with pytest.raises(ValueError, match="max_num_seqs"):
        SchedulerConfig(max_num_seqs=0)
    with pytest.raises(ValueError, match="refill_fraction"):
        SchedulerConfig(refill_fraction=2.0)


def test_prefill_respects_rows_and_token_budget():
    bm = BlockManager(64, 4)
    s = Scheduler(bm, SchedulerConfig(max_num_seqs=6, max_num_batched_tokens=12))
    for _ in range(4):
        s.add(seq(s, range(5), n=2))
    batch = s.schedule_prefill()
    assert len(batch) == 2  # 5 + 5 tokens fit in 12, a third prompt does not
    adm = s.admit(batch)
    assert len(adm.children) == 4 and adm.parent_index == [0, 0, 1, 1] and adm.first_row == 0
    assert len(adm.copy_src) == 2  # one partial block copied per extra sample
    assert [c.sample_index for c in adm.children] == [0, 1, 0, 1]
    assert adm.children[0].rng_key + 1 == adm.children[1].rng_key
    batch = s.schedule_prefill()
    assert len(batch) == 1  # rows: 4 running + 2 = 6 = max_num_seqs
    s.admit(batch)
    assert s.schedule_prefill() == [] and len(s.waiting) == 1


def test_wants_prefill_waits_for_free_rows():
    bm = BlockManager(64, 4)
    s = Scheduler(bm, SchedulerConfig(max_num_seqs=8, refill_fraction=0.5))
    for _ in range(5):
        s.add(seq(s, range(3), n=2))
    assert s.wants_prefill()  # nothing runs
    s.admit(s.schedule_prefill())
    assert len(s.running) == 8 and len(s.waiting) == 1
    assert not s.wants_prefill()
    s.postprocess(0, [1] * 8, None, {0: "stop", 1: "stop"}, [])
    assert not s.wants_prefill()  # 2 free rows < 0.5 * 8
    s.postprocess(0, [1] * 6, None, {0: "stop", 1: "stop"}, [])
    assert s.wants_prefill()


def test_finishing_compacts_rows_and_frees_blocks():
    bm = BlockManager(64, 4)
    s = Scheduler(bm, SchedulerConfig(max_num_seqs=8))
    for _ in range(3):
        s.add(seq(s, range(3), n=1))
    s.admit(s.schedule_prefill())
    a, b, c = s.running
    free_before = bm.num_free()
    finished, moves = s.postprocess(0, [7, 8, 9], None, {0: "stop"}, [])
    assert finished == [a] and a.status is SeqStatus.FINISHED and a.finish_reason == "stop"
    assert moves == [(2, 0)] and s.running == [c, b]
    assert b.token_ids[-1] == 8 and c.token_ids[-1] == 9
    assert bm.num_free() == free_before + 1


def test_decode_allocates_blocks_at_block_boundaries():
    bm = BlockManager(64, 4)
    s = Scheduler(bm)
    s.add(seq(s, range(4)))  # 4 tokens: the first generated one starts block 2
    s.admit(s.schedule_prefill())
    r = s.running[0]
    r.token_ids.append(5)
    moves, updates = s.prepare_decode()
    assert moves == [] and updates == [(0, 1, r.block_table[1])] and len(r.block_table) == 2
    r.token_ids.append(6)  # position 5: inside block 1, nothing to allocate
    assert s.prepare_decode() == ([], [])


def test_preemption_frees_the_newest_and_requeues_it_first():
    bm = BlockManager(4, 2)
    s = Scheduler(bm, SchedulerConfig(max_num_seqs=4))
    a, b = seq(s, [1, 2]), seq(s, [3, 4])
    s.add(a)
    s.add(b)
    s.admit(s.schedule_prefill())
    assert s.running == [a, b] and bm.num_free() == 2
    for x in (a, b):
        x.token_ids.append(0)  # 3 tokens each: position 2 starts a new block
    s.prepare_decode()
    assert bm.num_free() == 0
    for x in (a, b):
        x.token_ids += [0, 0]  # 5 tokens: both need a third block, none is free
    moves, updates = s.prepare_decode()
    assert s.running == [a] and s.waiting[0] is b and b.status is SeqStatus.WAITING
    assert b.block_table == [] and s.num_preemptions == 1 and moves == []
    assert updates == [(0, 2, a.block_table[2])]
