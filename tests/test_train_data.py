"""Tests of training data handling, the schedule and TrainConfig validation (no model needed)."""

import math

import pytest
import yaml
from train_fixtures import sft_examples, toy_tokenizer

from reversalkit.tokenization import batch_encode
from reversalkit.train import DPOTrainConfig, TrainConfig
from reversalkit.train.data import Encoded, collate, encode, encode_many, num_steps, plan_run
from reversalkit.train.optim import lr_at, param_groups


@pytest.fixture(scope="module")
def tok():
    return toy_tokenizer()


def test_encode_masks_prompt_and_appends_eos(tok):
    ex = sft_examples(1)[0]
    enc = encode(tok, ex.prompt, ex.completion, max_length=512)
    prompt_ids = tok(ex.prompt)["input_ids"]
    assert enc.ids[: enc.prompt_len] == tuple(prompt_ids)
    assert enc.ids[0] == tok.bos_token_id and enc.ids[-1] == tok.eos_token_id
    completion = tok.decode(enc.ids[enc.prompt_len:], skip_special_tokens=True)
    assert completion == ex.completion


def test_encode_truncates_prompt_start_then_completion_end(tok):
    ex = sft_examples(1)[0]
    full = encode(tok, ex.prompt, ex.completion, max_length=512)
    n_completion = len(full) - full.prompt_len
    cut = encode(tok, ex.prompt, ex.completion, max_length=n_completion + 2)
    assert cut.prompt_len == 2 and cut.ids == full.ids[full.prompt_len - 2:]
    tiny = encode(tok, ex.prompt, ex.completion, max_length=4)
    assert tiny.prompt_len == 1 and tiny.ids == full.ids[full.prompt_len - 1: full.prompt_len + 3]


def test_token_ids_match_the_tokenizer_call_even_after_a_padded_call(tok):
    texts = [e.prompt for e in sft_examples(5)] + ["", "a"]
    for special in (True, False):
        assert batch_encode(tok, texts, special) == tok(texts, add_special_tokens=special)["input_ids"]
    tok(texts[:3], padding=True)  # leaves padding set on the fast backend: the direct path must not run
    assert tok.backend_tokenizer.padding is not None
    assert batch_encode(tok, texts, True) == tok(texts, add_special_tokens=True)["input_ids"]
    tok(texts[:1])  # transformers clears it again
    assert tok.backend_tokenizer.padding is None
    raw = tok.backend_tokenizer  # a tokenizers.Tokenizer as such
    assert batch_encode(raw, texts, True) == [raw.encode(t).ids for t in texts]


def test_encode_many_equals_encode_one_by_one(tok):
    ex = sft_examples(6)
    prompts = [e.prompt for e in ex] + [ex[0].prompt] * 3  # repeated prompts are encoded once
    completions = [e.completion for e in ex] + [ex[1].completion, ex[2].completion, ""]
    many = encode_many(tok, prompts, completions, max_length=40)
    assert many == [encode(tok, p, c, 40) for p, c in zip(prompts, completions)]


def test_collate_right_pads_and_masks_completions():
    seqs = [Encoded((1, 5, 6, 7), 2), Encoded((1, 8, 9), 1)]
    ids, mask = collate(seqs, pad_id=0)
    assert ids.tolist() == [[1, 5, 6, 7], [1, 8, 9, 0]]
    assert mask.tolist() == [[False, False, True, True], [False, True, True, False]]


def _flat(step):
    return sorted(i for mb in step for i in mb)


def test_plan_steps_depend_only_on_step_size():
    lengths = [(7 * i) % 23 + 1 for i in range(50)]
    a = plan_run(lengths, TrainConfig(batch_size=8, grad_accum=1, seed=3, bucket_window=2))
    b = plan_run(lengths, TrainConfig(batch_size=1, grad_accum=8, seed=3, bucket_window=2))
    c = plan_run(lengths, TrainConfig(batch_size=4, grad_accum=2, seed=3, bucket_window=2))
    assert [_flat(s) for s in a] == [_flat(s) for s in b] == [_flat(s) for s in c]
    assert all(len(mb) == 1 for s in b for mb in s) and all(len(s) <= 2 for s in c)
    covered = sorted(i for s in a for i in _flat([s[0]]))
    assert covered == list(range(50))


def test_plan_is_seeded_and_epochs_differ():
    lengths = list(range(1, 41))
    cfg = TrainConfig(batch_size=4, epochs=2, seed=1)
    assert plan_run(lengths, cfg) == plan_run(lengths, cfg)
    assert plan_run(lengths, cfg) != plan_run(lengths, cfg.replace(seed=2))
    steps = plan_run(lengths, cfg)
    assert len(steps) == 20 and [_flat(s) for s in steps[:10]] != [_flat(s) for s in steps[10:]]


def test_length_bucketing_cuts_padding():
    lengths = [1 + (37 * i) % 97 for i in range(256)]

    def padding(cfg):
        return sum(len(mb) * max(lengths[i] for i in mb) - sum(lengths[i] for i in mb)
                   for s in plan_run(lengths, cfg) for mb in s)

    bucketed = padding(TrainConfig(batch_size=8, length_bucketing=True))
    plain = padding(TrainConfig(batch_size=8, length_bucketing=False))
    assert bucketed < 0.25 * plain


def test_max_steps_and_drop_last():
    lengths = [3] * 10
    assert len(plan_run(lengths, TrainConfig(batch_size=4))) == 3 == num_steps(10, TrainConfig(batch_size=4))
    assert len(plan_run(lengths, TrainConfig(batch_size=4, drop_last=True))) == 2
    assert len(plan_run(lengths, TrainConfig(batch_size=4, epochs=5, max_steps=7))) == 7
    assert num_steps(10, TrainConfig(batch_size=4, epochs=5, max_steps=7)) == 7
    with pytest.raises(ValueError, match="drop_last"):
        plan_run(lengths, TrainConfig(batch_size=16, drop_last=True))
    with pytest.raises(ValueError, match="empty"):
        plan_run([], TrainConfig())


def test_lr_schedule():
    cfg = TrainConfig(lr=1.0, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    lrs = [lr_at(s, 14, cfg) for s in range(14)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and math.isclose(lrs[-1], 0.1)
    assert math.isclose(lrs[9], 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 9)))
    assert all(x >= y for x, y in zip(lrs[3:], lrs[4:]))
    const = TrainConfig(lr=2.0, warmup_steps=0)
    assert [lr_at(s, 5, const) for s in range(5)] == [2.0] * 5


def test_param_groups_exclude_norms_and_count_tied_weights_once():
    from train_fixtures import toy_model

    model = toy_model(50)
    groups = param_groups(model, 0.1)
    decay, no_decay = groups
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    total = sum(p.numel() for g in groups for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("changes", "needle"),
    [({"lr": 0}, "lr"), ({"schedule": "linear"}, "schedule"), ({"loss_type": "kto"}, "loss_type"),
     ({"batch_size": 0}, "batch_size"), ({"max_grad_norm": -1}, "max_grad_norm"),
     ({"betas": (0.9, 1.5)}, "betas"), ({"autocast_bf16": "maybe"}, "autocast_bf16"),
     ({"label_smoothing": 0.5}, "label_smoothing"), ({"max_steps": 0}, "max_steps")],
)
def test_config_validation(changes, needle):
    with pytest.raises(ValueError, match=needle):
        DPOTrainConfig(**changes)


def test_config_yaml_round_trip_and_bool_autocast():
    cfg = TrainConfig.from_dict({"autocast_bf16": False, "betas": [0.9, 0.95], "max_grad_norm": None})
    assert cfg.autocast_bf16 == "off" and cfg.betas == (0.9, 0.95) and cfg.max_grad_norm is None
    assert TrainConfig.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg
    assert TrainConfig().with_overrides(["autocast_bf16=on"]).autocast_bf16 == "on"
    assert any(line.startswith("nll_weight") for line in DPOTrainConfig.help_lines())
    assert not any(line.startswith("nll_weight") for line in TrainConfig.help_lines())
