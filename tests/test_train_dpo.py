"""Tests of reference_logprobs and train_dpo: oracle log-probs, log 2 at step 0, NLL term,
exact accumulation, and that preferences are learned."""

import math

import pytest
import torch
from train_fixtures import (
    captured_grads,
    dpo_pairs,
    rel_grad_diffs,
    single_thread,
    toy_model,
    toy_tokenizer,
)

from reversalkit.train import TrainConfig, reference_logprobs, train_dpo
from reversalkit.train.data import encode


@pytest.fixture(scope="module")
def tok():
    return toy_tokenizer()


def _oracle_logps(model, tok, prompt: str, completion: str) -> float:
    """Summed completion log-prob from full-vocabulary float64 log_softmax, one sequence at a time."""
    enc = encode(tok, prompt, completion, 512)
    ids = torch.tensor([enc.ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.double(), -1)[0, :-1]  # (T-1, V)
    picked = logp.gather(-1, ids[0, 1:, None])[:, 0]  # (T-1,)
    return float(picked[enc.prompt_len - 1:].sum())


def test_reference_logprobs_match_full_softmax_oracle(tok):
    model = toy_model(len(tok), seed=1)
    model.train()
    pairs = dpo_pairs(7)
    with single_thread():
        ref = reference_logprobs(model, tok, pairs, TrainConfig(batch_size=3))
    assert ref.shape == (7, 2) and ref.dtype == torch.float32
    expect = torch.tensor([[_oracle_logps(model, tok, p.prompt, p.chosen),
                            _oracle_logps(model, tok, p.prompt, p.rejected)] for p in pairs],
                          dtype=torch.float64)
    torch.testing.assert_close(ref.double(), expect, rtol=2e-6, atol=1e-5)
    assert model.training  # the caller's mode is restored after the eval-mode pass


def test_step_zero_loss_is_log2_when_policy_is_reference(tok):
    model = toy_model(len(tok), seed=2)
    pairs = dpo_pairs(12)
    cfg = TrainConfig(lr=1e-3, batch_size=4, grad_accum=2, beta=0.1, loss_type="sigmoid", max_steps=1)
    with single_thread():
        ref = reference_logprobs(model, tok, pairs, cfg)
        result = train_dpo(model, tok, pairs, ref, cfg, progress=False)
    # Float32 log-probs of ~-60 agree to ~1e-5 between batchings; beta scales that to ~1e-6 in the
    # logits of the sigmoid, whose slope at 0 is 1/2.
    assert abs(result.losses[0] - math.log(2)) < 1e-6
    assert abs(result.chosen_rewards[0]) < 1e-5 and abs(result.rejected_rewards[0]) < 1e-5


def test_nll_term_adds_the_chosen_token_mean(tok):
    model = toy_model(len(tok), seed=2)
    pairs = dpo_pairs(8)
    cfg = TrainConfig(batch_size=8, nll_weight=0.5, max_steps=1, shuffle=False)
    with single_thread():
        ref = reference_logprobs(model, tok, pairs, cfg)
        result = train_dpo(model, tok, pairs, ref, cfg, progress=False)
    n_tokens = sum(len(e) - e.prompt_len for e in (encode(tok, p.prompt, p.chosen, 512) for p in pairs))
    nll = float(-ref[:, 0].sum()) / n_tokens
    assert abs(result.nll[0] - nll) < 1e-5 * nll
    assert abs(result.losses[0] - (math.log(2) + 0.5 * nll)) < 1e-5


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_accumulation_is_exact(tok, loss_type):
    pairs = dpo_pairs(16)
    base = TrainConfig(lr=3e-3, epochs=1, seed=4, beta=0.5, loss_type=loss_type, nll_weight=0.2)
    ref = reference_logprobs(toy_model(len(tok)), tok, pairs, base)
    runs = []
    for b, a in ((8, 1), (1, 8), (2, 4)):
        model = toy_model(len(tok))
        with single_thread(), captured_grads() as grads:
            cfg = base.replace(batch_size=b, grad_accum=a)
            result = train_dpo(model, tok, pairs, ref, cfg, progress=False)
        runs.append((grads, result))
    (g0, r0) = runs[0]
    assert r0.steps == 2
    for grads, result in runs[1:]:
        diffs = rel_grad_diffs(g0, grads)  # see test_train_sft.test_accumulation_is_exact
        assert diffs[0] < 1e-6 and max(diffs) < 2e-5
        torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(r0.losses), rtol=2e-6, atol=1e-7)
        torch.testing.assert_close(torch.tensor(result.grad_norms), torch.tensor(r0.grad_norms),
                                   rtol=2e-5, atol=0)
        # Rewards start at 0 (policy == reference), so accuracy at step 0 is float noise; compare rewards.
        torch.testing.assert_close(torch.tensor(result.chosen_rewards), torch.tensor(r0.chosen_rewards),
                                   rtol=1e-4, atol=1e-6)


def test_dpo_learns_the_preference(tok):
    model = toy_model(len(tok), seed=3)
    pairs = dpo_pairs(8)
    cfg = TrainConfig(lr=3e-3, batch_size=8, epochs=15, beta=0.5)
    with single_thread():
        ref = reference_logprobs(model, tok, pairs, cfg)
        result = train_dpo(model, tok, pairs, ref, cfg, progress=False)
        after = reference_logprobs(model, tok, pairs, cfg)
    assert result.losses[-1] < 0.2 * result.losses[0]
    assert result.reward_accuracy[-1] == 1.0
    margin_before = ref[:, 0] - ref[:, 1]
    margin_after = after[:, 0] - after[:, 1]
    assert bool((margin_after > margin_before).all())
    # The recorded rewards are beta * log-ratios of the policy to the reference.
    assert result.chosen_rewards[-1] > result.rejected_rewards[-1]


def test_reference_shape_mismatch_is_actionable(tok):
    model = toy_model(len(tok))
    with pytest.raises(ValueError, match="reference_logprobs"):
        train_dpo(model, tok, dpo_pairs(4), torch.zeros(3, 2), TrainConfig(), progress=False)
