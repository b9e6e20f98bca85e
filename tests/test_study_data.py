"""D_t builders: SFT selection (all / dedup / cap) and DPO pairs (zip of shuffled correct/incorrect)."""

import random

import pytest

from reversalkit.study.data import build_pairs, select_sft
from reversalkit.study.plan import derive_seed, method_nodes, node_name


def _samples():
    rows = []
    spec = {"p1": [("a", 1), ("a", 1), ("b", 1), ("x", 0)],
            "p2": [("c", 1), ("y", 0), ("z", 0), ("y", 0), ("w", 0)],
            "p3": [("q", 0), ("r", 0)],
            "p4": [("d", 1), ("e", 1), ("f", 1)]}
    for pid, items in spec.items():
        for i, (text, ok) in enumerate(items):
            rows.append({"id": pid, "i": i, "text": text, "correct": bool(ok)})
    return rows


def test_select_sft_all_and_dedup():
    s = _samples()
    assert select_sft(s) == [("p1", "a"), ("p1", "a"), ("p1", "b"), ("p2", "c"), ("p4", "d"), ("p4", "e"),
                             ("p4", "f")]
    assert select_sft(s, selection="dedup") == [("p1", "a"), ("p1", "b"), ("p2", "c"), ("p4", "d"),
                                                ("p4", "e"), ("p4", "f")]
    capped = select_sft(s, max_per_problem=2, seed=3)
    assert [pid for pid, _ in capped] == ["p1", "p1", "p2", "p4", "p4"]
    assert {t for pid, t in capped if pid == "p4"} <= {"d", "e", "f"}
    with pytest.raises(ValueError, match="selection"):
        select_sft(s, selection="best")


def test_select_sft_independent_of_input_order():
    s = _samples()
    shuffled = list(s)
    random.Random(1).shuffle(shuffled)
    assert select_sft(shuffled, max_per_problem=2, seed=5) == select_sft(s, max_per_problem=2, seed=5)


def test_build_pairs_counts_and_membership():
    s = _samples()
    pairs = build_pairs(s, seed=0)
    by = {}
    for pid, good, bad in pairs:
        by.setdefault(pid, []).append((good, bad))
    # min(#correct, #incorrect) per problem; p3 (no correct) and p4 (no incorrect) give none
    assert {k: len(v) for k, v in by.items()} == {"p1": 1, "p2": 1}
    assert by["p1"][0][0] in {"a", "b"} and by["p1"][0][1] == "x"
    assert by["p2"][0] == ("c", by["p2"][0][1]) and by["p2"][0][1] in {"y", "z", "w"}
    # every chosen is a correct sample and every rejected an incorrect one, each used at most once
    more = [{"id": "p", "i": i, "text": f"t{i}", "correct": i % 3 == 0} for i in range(12)]
    pairs = build_pairs(more, seed=1)
    assert len(pairs) == 4
    assert all(int(g[1:]) % 3 == 0 and int(b[1:]) % 3 != 0 for _, g, b in pairs)
    assert len({g for _, g, _ in pairs}) == 4 and len({b for _, _, b in pairs}) == 4
    assert len(build_pairs(more, seed=1, max_per_problem=2)) == 2


def test_build_pairs_seeded():
    more = [{"id": "p", "i": i, "text": f"t{i}", "correct": i % 2 == 0} for i in range(20)]
    assert build_pairs(more, seed=1) == build_pairs(list(reversed(more)), seed=1)
    assert build_pairs(more, seed=1) != build_pairs(more, seed=2)


def test_plan_nodes_share_lineage():
    sft = method_nodes(["sft"] * 4)
    sft_dpo = method_nodes(["sft", "dpo", "sft", "dpo"])
    assert [n.name for n in sft] == ["m1", "m1-s", "m1-ss", "m1-sss", "m1-ssss"]
    assert [n.name for n in sft_dpo] == ["m1", "m1-s", "m1-sd", "m1-sds", "m1-sdsd"]
    assert sft_dpo[2].parent == "m1-s" and sft_dpo[2].kind == "dpo" and sft_dpo[2].iteration == 3
    assert node_name([]) == "m1"
    assert derive_seed(0, "a", 1) == derive_seed(0, "a", 1) != derive_seed(1, "a", 1)
    assert 0 <= derive_seed(123, "x") < 2**31
