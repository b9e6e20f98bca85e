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

from reversalkit.train import DPOTrainConfig, reference_logprobs, train_dpo
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
        ref = reference_logprobs(model, tok, pairs, DPOTrainConfig(batch_size=3))
    assert ref.shape == (7, 2) and ref.dtype == torch.float32
    expect = torch.tensor([[_oracle_logps(model, tok, p.prompt, p.chosen),
                            _oracle_logps(model, tok, p.prompt, p.rejected)] for p in pairs],
                          dtype=torch.float64)
    torch.testing.assert_close(ref.double(), expect, rtol=2e-6, atol=1e-5)
    assert model.training  # the caller's mode is restored after the eval-mode pass


def test_step_zero_loss_is_log2_when_policy_is_reference(tok):
    model = toy_model(len(tok), seed=2)
    pairs = dpo_pairs(12)
    cfg = DPOTrainConfig(lr=1e-3, batch_size=4, grad_accum=2, beta=0.1, loss_type="sigmoid", max_steps=1)
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
    cfg = DPOTrainConfig(batch_size=8, nll_weight=0.5, max_steps=1, shuffle=False)
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
    base = DPOTrainConfig(lr=3e-3, epochs=1, seed=4, beta=0.5, loss_type=loss_type, nll_weight=0.2)
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
    cfg = DPOTrainConfig(lr=3e-3, batch_size=8, epochs=15, beta=0.5)
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
        train_dpo(model, tok, dpo_pairs(4), torch.zeros(3, 2), DPOTrainConfig(), progress=False)


def _arch_model(arch: str, vocab: int):
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if arch == "llama":
        return toy_model(vocab, seed=5)
    torch.manual_seed(5)
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    if arch == "mistral":  # a window wider than every sequence: the same as full attention
        return MistralForCausalLM(MistralConfig(**common, sliding_window=200))
    model = Qwen2ForCausalLM(Qwen2Config(**common, use_sliding_window=False))  # q/k/v biases
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.5)
    return model


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_shared_prompt_equals_separate_sequences(tok, arch, monkeypatch):
    """Running each pair's prompt once gives the reference log-probs and the step gradients of
    running chosen and rejected sequences separately, up to float32 rounding."""
    import copy

    from reversalkit.train import dpo, step

    calls = []
    shared = step.shared_prompt_hidden
    monkeypatch.setattr(dpo, "shared_prompt_hidden", lambda *a: calls.append(1) or shared(*a))
    model = _arch_model(arch, len(tok))
    pairs = dpo_pairs(6)
    on = DPOTrainConfig(lr=1e-3, batch_size=3, grad_accum=2, max_steps=1, beta=0.5, nll_weight=0.1, seed=2)
    off = on.replace(share_prompt=False)
    with single_thread():
        ref_on = reference_logprobs(model, tok, pairs, on)
        assert len(calls) == 2  # two batches of three pairs, both shared
        ref_off = reference_logprobs(model, tok, pairs, off)
        torch.testing.assert_close(ref_on, ref_off, rtol=1e-6, atol=1e-5)
        grads = []
        for cfg in (on, off):
            with captured_grads() as g:
                train_dpo(copy.deepcopy(model), tok, pairs, ref_off, cfg, progress=False)
            grads.append(g)
    assert len(calls) == 4 and grads[0][0].norm() > 0
    assert rel_grad_diffs(grads[1], grads[0])[0] < 1e-5


def test_pairs_whose_prompts_differ_after_truncation_run_separately(tok, monkeypatch):
    from reversalkit.train import DPOPair, dpo

    monkeypatch.setattr(dpo, "shared_prompt_hidden", lambda *a: pytest.fail("shared path used"))
    base = dpo_pairs(4)
    # a long chosen completion makes max_length cut the chosen sequence's prompt, not the rejected's
    pairs = [DPOPair(p.prompt, p.chosen + " and so on" * 8, p.rejected) for p in base]
    cfg = DPOTrainConfig(batch_size=4, max_length=48)
    encoded = dpo.encode_dpo(tok, pairs, cfg.max_length)
    assert any(c.prompt_len != r.prompt_len or c.ids[:c.prompt_len] != r.ids[:r.prompt_len]
               for c, r in encoded)
    assert dpo._shared_prompt_batch(encoded, range(4), 0, "cpu") is None
    model = toy_model(len(tok))
    ref = reference_logprobs(model, tok, pairs, cfg)
    torch.testing.assert_close(ref, reference_logprobs(model, tok, pairs, cfg.replace(share_prompt=False)))


@pytest.mark.parametrize("config, length, ok", [
    ({}, 1000, True),
    ({"sliding_window": None}, 1000, True),
    ({"sliding_window": 64}, 50, True),
    ({"sliding_window": 64}, 100, False),
    ({"sliding_window": 64, "use_sliding_window": False}, 100, True),  # Qwen2 with the window off
    ({"layer_types": ["full_attention", "sliding_attention"], "sliding_window": 8}, 100, False),
    ({"layer_types": ["full_attention", "linear_attention"]}, 10, False),
])
def test_shared_prompt_only_under_full_attention(config, length, ok):
    from types import SimpleNamespace

    from reversalkit.train.step import supports_shared_prompt

    assert supports_shared_prompt(SimpleNamespace(config=SimpleNamespace(**config)), length) is ok
    checkpointed = SimpleNamespace(config=SimpleNamespace(**config), is_gradient_checkpointing=True)
    assert not supports_shared_prompt(checkpointed, length)


def test_gradient_checkpointing_trains_on_separate_sequences(tok, monkeypatch):
    """Checkpointing turns the KV cache off in training, so pairs then run as separate sequences."""
    from reversalkit.train import dpo

    pairs = dpo_pairs(4)
    cfg = DPOTrainConfig(lr=1e-3, batch_size=4, max_steps=1)
    model = toy_model(len(tok), seed=6)
    ref = reference_logprobs(model, tok, pairs, cfg)
    # transformers 5 renamed the switch (the old name warns); older versions have only the old one
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    monkeypatch.setattr(dpo, "shared_prompt_hidden", lambda *a: pytest.fail("shared path used"))
    result = train_dpo(model, tok, pairs, ref, cfg, progress=False)
    assert abs(result.losses[0] - math.log(2)) < 1e-5
