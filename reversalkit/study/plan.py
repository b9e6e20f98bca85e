"""What a study computes: model iterates as nodes of a tree, named by their training lineage.

Every iterate is M1 followed by a sequence of round kinds, so iterates that share a lineage are
the same model and are trained and evaluated once: Iterative SFT is m1 -> m1-s -> m1-ss -> ...,
Iterative DPO m1 -> m1-d -> m1-dd, and Iterative SFT-DPO m1 -> m1-s -> m1-sd -> m1-sds, whose first
round is the SFT method's first round. The gold control arm is m1 -> m1-g -> m1-gg: round t trains
on gold solutions of the problems of SFT's round t, whose samples come from the SFT chain. Seeds
derive from the lineage, not from the method, which is what makes that sharing exact.
"""

from __future__ import annotations

import dataclasses
import hashlib

ROOT = "m1"
KIND_LETTER = {"sft": "s", "dpo": "d", "gold": "g"}


@dataclasses.dataclass(frozen=True)
class Node:
    """One model iterate: `name` (e.g. 'm1-sd'), its `parent`, the `kind` of round that made it."""

    name: str
    parent: str | None
    kind: str | None  # 'sft' | 'dpo' | 'gold' | None for M1
    iteration: int  # 1 for M1


def node_name(kinds: list[str] | tuple[str, ...]) -> str:
    return ROOT if not kinds else ROOT + "-" + "".join(KIND_LETTER[k] for k in kinds)


def method_nodes(round_kinds: list[str]) -> list[Node]:
    """The chain M1, M2, ..., M_T of one method, given the kinds of its rounds t = 2..T."""
    nodes = [Node(ROOT, None, None, 1)]
    for r, kind in enumerate(round_kinds):
        nodes.append(Node(node_name(round_kinds[: r + 1]), nodes[-1].name, kind, r + 2))
    return nodes


def sampled_by(node: Node) -> str:
    """The iterate whose train samples make `node`'s D_t: its parent, or for a gold round the SFT
    iterate of the same iteration as the parent (gold rounds use the problems of SFT's D_t)."""
    assert node.parent is not None
    if node.kind == "gold":
        return node_name(["sft"] * (node.iteration - 2))
    return node.parent


def derive_seed(seed: int, *parts: object) -> int:
    """A 31-bit seed from the master seed and a path of names (stable across runs and machines)."""
    digest = hashlib.sha256(":".join([str(seed), *map(str, parts)]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def node_dir(name: str) -> str:
    return f"nodes/{name}"
