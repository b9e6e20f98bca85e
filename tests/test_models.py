"""Tests of reversalkit.models: the word-level tokenizer, the tiny Llama, saving and loading."""

import pytest
import torch

from reversalkit.models import (
    BOS,
    EOS,
    PAD,
    UNK,
    build_word_tokenizer,
    load_model,
    load_tokenizer,
    num_parameters,
    resolve_dtype,
    save_model,
    tiny_llama,
)

# Spaced like the synthetic task: every token separated, except inside annotations.
GSM_TEXTS = [
    "Question: Natalia sells 48 clips in April . How many clips does she sell in May ?\nAnswer:",
    "She sells 48 / 2 = <<48/2=24>>24 clips in May .\nAltogether she sells <<48+24=72>>72 clips .\n#### 72",
    "Tom's dog costs $ 2 . 50 ( each ) , 50 % off ; 1234 and 007 ? Yes !",
    "Each box holds 7 apples ; Tom has 3 boxes , so he has 3 * 7 = <<3*7=21>>21 apples .\n#### 21",
]


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer(GSM_TEXTS)


def test_numbers_annotations_and_markers_are_single_tokens(tok):
    for n in (0, 7, 42, 999):
        assert tok.convert_ids_to_tokens(tok(str(n), add_special_tokens=False)["input_ids"]) == [str(n)]
    pieces = tok.convert_ids_to_tokens(tok("<<3*7=21>>21\n#### 21", add_special_tokens=False)["input_ids"])
    assert pieces == ["<<", "3", "*", "7", "=", "21", ">>", "21", "\n", "####", "21"]
    # Larger numbers and leading zeros fall back to one token per digit, never to unk.
    digits = tok("1234 007", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(digits) == list("1234007")


def test_vocab_layout_and_special_tokens(tok):
    assert [tok.convert_tokens_to_ids(t) for t in (PAD, BOS, EOS, UNK)] == [0, 1, 2, 3]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.convert_tokens_to_ids("0") == 4 and tok.convert_tokens_to_ids("999") == 1003
    assert tok("Tom")["input_ids"][0] == tok.bos_token_id
    assert tok("zebra", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
    assert tok.padding_side == "left"


def test_vocab_is_deterministic_and_order_free():
    a = build_word_tokenizer(GSM_TEXTS).get_vocab()
    b = build_word_tokenizer(list(reversed(GSM_TEXTS)) * 2).get_vocab()
    assert a == b
    extra = build_word_tokenizer(GSM_TEXTS, extra_tokens=["<sep>"]).get_vocab()
    assert extra["<sep>"] == 1004


@pytest.mark.parametrize("text", GSM_TEXTS)
def test_decode_round_trips_gsm_style_text(tok, text):
    ids = tok(text)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_attached_punctuation_keeps_words_numbers_and_answer(tok):
    text = "Tom has 3 boxes.\nAltogether he has <<3*7=21>>21 apples.\n#### 21"
    decoded = tok.decode(tok(text)["input_ids"], skip_special_tokens=True)
    assert decoded == "Tom has 3 boxes .\nAltogether he has <<3*7=21>>21 apples .\n#### 21"


def test_round_trip_survives_save_and_load(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    for text in GSM_TEXTS:
        ids = loaded(text)["input_ids"]
        assert ids == tok(text)["input_ids"]
        assert loaded.decode(ids, skip_special_tokens=True) == text


def test_round_trip_on_synthetic_gold_solutions():
    from reversalkit.tasks import get_task

    task = get_task("synthetic", train_size=200, test_size=50, ood_size=50)
    problems = task.load("train") + task.load("test") + task.load("test_ood")
    texts = [task.format_prompt(p) for p in problems]
    texts += [s for p in problems for s in p.meta.get("solutions", [p.solution])]
    tok = build_word_tokenizer(texts)
    assert len(tok) < 1400  # numbers 0..999 + the task's words: about 1,000 tokens
    for p in problems:
        for sol in p.meta.get("solutions", [p.solution]):
            decoded = tok.decode(tok(sol)["input_ids"], skip_special_tokens=True)
            assert decoded == sol
            assert task.is_correct(p, decoded)


def test_bad_max_number_is_an_actionable_error():
    with pytest.raises(ValueError, match="10\\*\\*k - 1"):
        build_word_tokenizer(["a"], max_number=500)


def test_tiny_llama_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = tiny_llama(1100, seed=0)
    after = torch.rand(3)
    assert torch.equal(before, after)
    b = tiny_llama(1100, seed=0)
    c = tiny_llama(1100, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.layers.0.mlp.up_proj.weight"], sc["model.layers.0.mlp.up_proj.weight"])
    assert a.dtype == torch.float32
    assert a.lm_head.weight is a.model.embed_tokens.weight


def test_tiny_llama_parameter_count():
    model = tiny_llama(1100)
    h, inter, kv = 128, 512, 64  # kv width: 2 kv heads of dim 32
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * inter + 2 * h
    assert num_parameters(model) == 1100 * h + 4 * per_layer + h
    assert 1.0e6 < num_parameters(model) < 1.3e6


def test_tiny_llama_rejects_bad_head_layout():
    with pytest.raises(ValueError, match="num_heads"):
        tiny_llama(100, hidden_size=100, num_heads=3)


def test_save_and_load_round_trip(tok, tmp_path):
    model = tiny_llama(len(tok), hidden_size=32, num_layers=1, seed=3)
    save_model(model, tok, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded = load_model(tmp_path / "m", device="cpu", dtype="float32")
    ids = torch.tensor([tok(GSM_TEXTS[1])["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert not loaded.training
    assert load_tokenizer(tmp_path / "m").get_vocab() == tok.get_vocab()


def test_progress_false_silences_transformers_bars_and_restores_them(tok, tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    model = tiny_llama(len(tok), hidden_size=32, num_layers=1, seed=3)
    was = hf_logging.is_progress_bar_enabled()  # the CLI's --quiet, run by other tests, turns them off
    hf_logging.enable_progress_bar()
    try:
        save_model(model, tok, tmp_path / "quiet", progress=False)
        load_model(tmp_path / "quiet", device="cpu", dtype="float32", progress=False)
        quiet = capfd.readouterr().err
        assert hf_logging.is_progress_bar_enabled()
        save_model(model, tok, tmp_path / "loud")
        load_model(tmp_path / "loud", device="cpu", dtype="float32")
        loud = capfd.readouterr().err
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()
    assert "Writing model shards" in loud and "Loading weights" in loud
    assert "Writing model shards" not in quiet and "Loading weights" not in quiet


def test_missing_hub_model_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="local checkpoint directory"):
        load_model("reversalkit-test/no-such-model", device="cpu", dtype="float32")
    with pytest.raises(OSError, match="local checkpoint directory"):
        load_tokenizer("reversalkit-test/no-such-model")


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path, device="cpu", dtype="float32")


def test_resolve_dtype():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype(torch.float16, "cpu") == torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float8", "cpu")
