"""The process group of one process, problem shards, and the run store view of ranks other than 0."""

from __future__ import annotations

import pytest
import torch

from reversalkit import dist
from reversalkit.study.store import RunStore


@pytest.mark.parametrize("n, world", [(0, 2), (1, 2), (7, 3), (10, 4), (5, 5), (3, 8)])
def test_shards_concatenate_to_the_items_in_order(n, world):
    items = list(range(n))
    shards = [items[dist.Group(r, world).shard(n)] for r in range(world)]
    assert [x for s in shards for x in s] == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_a_group_of_one_returns_its_input(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    group = dist.process_group("cpu")
    assert (group.rank, group.world, group.is_main, group.distributed) == (0, 1, True, False)
    t = torch.ones(3)
    assert group.broadcast({"a": 1}) == {"a": 1} and group.gather(5) == [5] and group.all_gather(5) == [5]
    assert group.all_reduce_sum(t) is t and t.tolist() == [1, 1, 1] and group.agree(False) is False
    group.barrier()
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        dist.Group(2, 2)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        dist.process_group("cpu")


def test_the_follower_store_reads_and_drops_writes(tmp_path):
    main = RunStore.open(tmp_path / "run", {"seed": 0})
    main.write_json("a.json", {"x": 1})
    follower = RunStore.follower(tmp_path / "run")
    assert follower.read_json("a.json") == {"x": 1}
    follower.write_json("a.json", {"x": 2})
    follower.write_json("b.json", {})
    with follower.atomic_dir("nodes/m1/model") as tmp:
        (tmp / "w").write_text("w")
    follower.mark_done("m1/train")
    assert follower.is_done("m1/train") and not main.is_done("m1/train")
    assert main.read_json("a.json") == {"x": 1} and not (tmp_path / "run" / "b.json").exists()
    assert not (tmp_path / "run" / "nodes").exists()
    assert "m1/train" not in RunStore.read_only(tmp_path / "run").steps()
    main.close()
