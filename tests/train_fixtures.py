"""Shared toy data and models for the training tests (and the golden-trajectory regeneration).

Everything here is fixed in the test code, independent of reversalkit.tasks, so that the golden
trajectories change only when training itself (or torch/transformers numerics) changes.
"""

from __future__ import annotations

import contextlib

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from reversalkit.models import build_word_tokenizer, tiny_llama
from reversalkit.train import DPOPair, SFTExample


def sft_examples(n: int = 16) -> list[SFTExample]:
    out = []
    for k in range(n):
        a, b = 3 + 7 * k % 40, 2 + 5 * k % 9
        steps = "\n".join(f"Step {j}: {a} + {j} = <<{a}+{j}={a + j}>>{a + j} ." for j in range(k % 3))
        completion = f"{steps}\nSo {a} * {b} = <<{a}*{b}={a * b}>>{a * b} .\n#### {a * b}".lstrip("\n")
        out.append(SFTExample(f"Question {k}: what is {a} times {b} ?\nAnswer:", completion))
    return out


def dpo_pairs(n: int = 16) -> list[DPOPair]:
    pairs = []
    for k, ex in enumerate(sft_examples(n)):
        wrong = ex.completion.rsplit("#### ", 1)[0] + f"#### {k + 1}"
        if k % 2:
            wrong = "I think it is " + wrong
        pairs.append(DPOPair(ex.prompt, ex.completion, wrong))
    return pairs


def toy_tokenizer():
    texts = [e.prompt + " " + e.completion for e in sft_examples(32)]
    texts += [p.rejected for p in dpo_pairs(32)]
    return build_word_tokenizer(texts)


def toy_model(vocab_size: int, seed: int = 0):
    return tiny_llama(vocab_size, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                      intermediate_size=64, max_position_embeddings=128, seed=seed)


@contextlib.contextmanager
def single_thread():
    """Fix torch to one CPU thread: reduction orders then do not depend on the host's core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def captured_grads():
    """Collect the flattened gradient handed to every optimizer step inside the block: list of (D,)."""
    grads: list[torch.Tensor] = []

    def hook(optimizer, args, kwargs):
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        grads.append(torch.cat([p.grad.detach().reshape(-1).clone() for p in params]))

    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield grads
    finally:
        handle.remove()


def rel_grad_diffs(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[float]:
    """||a_k - b_k|| / ||a_k|| for every optimizer step k (gradients as the optimizer saw them)."""
    assert len(a) == len(b)
    return [float((x - y).norm() / x.norm()) for x, y in zip(a, b)]
