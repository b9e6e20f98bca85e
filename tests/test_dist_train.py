"""Training shared over 2 gloo ranks equals one process, with DDP and with FSDP2: same losses per
step within the golden trajectories' tolerance, replicas equal, ranks starting from different
weights take rank 0's, and rank 0's checkpoint loads with from_pretrained; the reference pass with
its batches split over the ranks equals one process's bit for bit.

The ranks run under torchrun (`dist_worker.py train`); each takes its slice of every micro-batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from test_train_golden import RTOL
from train_fixtures import dpo_pairs, sft_examples, single_thread, toy_model, toy_tokenizer
from transformers import AutoModelForCausalLM

import reversalkit.train.step as step_module
from reversalkit.dist import Group
from reversalkit.train import DPOTrainConfig, TrainConfig, reference_logprobs, train_dpo, train_sft
from reversalkit.train.parallel import local_micro_batches

# batch 5 over 2 ranks: slices of 3 and 2; 16 examples with drop_last off leave a last step of 1,
# which one rank runs alone (the other contributes zero gradients)
SFT_CFG = TrainConfig(lr=3e-3, batch_size=5, grad_accum=2, epochs=2, warmup_steps=1, schedule="cosine",
                      weight_decay=0.01, max_grad_norm=1.0, seed=11, drop_last=False)
DPO_CFG = DPOTrainConfig(lr=2e-3, batch_size=3, grad_accum=1, epochs=1, warmup_steps=1, beta=0.2,
                         loss_type="sigmoid", nll_weight=0.1, max_grad_norm=1.0, seed=12, drop_last=False)
HERE = Path(__file__).parent


def torchrun(nproc: int, *args: str, env: dict[str, str] | None = None, timeout: float = 240
             ) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node nproc dist_worker.py *args`, captured; nproc 1 runs
    the worker as a plain process, without torchrun."""
    launch = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [*launch, str(HERE / "dist_worker.py"), *args]
    full = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {}),
            # the tests' helpers only: reversalkit is the installed package, never the source tree
            # (whose reversalkit/ lacks the kernels subpackage that the install maps from kernels/)
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=timeout)


def test_each_rank_takes_its_slice_of_every_micro_batch_in_order():
    steps = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10]]
    assert [local_micro_batches(steps, Group(r, 2)) for r in range(2)] == [
        [([0, 1, 2], True), ([5, 6, 7], True), ([10], True)],
        [([3, 4], True), ([8, 9], True), ([10], False)],  # an empty slice: a stand-in, its loss x 0
    ]
    whole = [(s, True) for s in steps]
    assert local_micro_batches(steps, None) == local_micro_batches(steps, Group()) == whole


def _single(fused: bool = True) -> dict:
    """One process's run; fused=False: with HF's RMSNorm / SwiGLU, as FSDP trains (see run_steps)."""
    tok = toy_tokenizer()
    model = toy_model(len(tok), seed=0)
    plain = contextlib.nullcontext() if fused else mock.patch.object(
        step_module, "fused_cpu_ops", lambda m, enabled=True: contextlib.nullcontext(0))
    with single_thread(), plain:
        sft = train_sft(model, tok, sft_examples(16), SFT_CFG, progress=False)
        pairs = dpo_pairs(16)
        ref = reference_logprobs(model, tok, pairs, DPO_CFG)
        dpo = train_dpo(model, tok, pairs, ref, DPO_CFG, progress=False)
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return {"sft": sft.to_dict(), "dpo": dpo.to_dict(), "weights": weights.tolist()}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_ranks_train_like_one_process(tmp_path, mode):
    proc = torchrun(2, "train", str(tmp_path), mode)
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = json.loads((tmp_path / "train.json").read_text())
    one = _single(fused=mode != "fsdp")
    assert two["replicas_equal"] and two["ref_shared_equal"]
    # rank 0's checkpoint of the trained model is whole: from_pretrained loads the weights trained
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in saved.parameters()]),
                       torch.tensor(two["weights"]))
    for kind in ("sft", "dpo"):
        a, b = one[kind], two[kind]
        assert len(a["losses"]) == len(b["losses"]) > 0
        assert b["tokens"] == a["tokens"] and b["lrs"] == a["lrs"]
        for key in ("losses", "grad_norms"):
            assert b[key] == pytest.approx(a[key], rel=RTOL[kind], abs=1e-7), (kind, key)
    # rewards are beta * (policy - reference) differences of summed log-probs of ~-60, which start at
    # 0: their error is RTOL of beta * 60, not of their own size
    for key in ("chosen_rewards", "rejected_rewards"):
        assert two["dpo"][key] == pytest.approx(one["dpo"][key], abs=RTOL["dpo"] * DPO_CFG.beta * 60)
    # at step 0 policy == reference and the accuracy compares rounding noise; after it, real margins
    assert two["dpo"]["reward_accuracy"][1:] == one["dpo"]["reward_accuracy"][1:]
    # the final weights agree far closer than one step moves them (AdamW moves a weight by up to ~lr;
    # where a gradient is near zero its normalised update magnifies rounding, measured 2e-5 = 0.6% lr)
    w1, w2 = torch.tensor(one["weights"]), torch.tensor(two["weights"])
    assert (w1 - w2).abs().max() < 0.02 * min(SFT_CFG.lr, DPO_CFG.lr)
