"""Sampling: the first-step distribution matches transformers' (chi-square), seeds reproduce
whatever shares the batch, stop strings, log-probabilities, counter-based uniforms."""

import numpy as np
import pytest
import torch
from scipy import stats
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM

from reversalkit._ext import native
from reversalkit.engine import Engine, SamplingParams
from reversalkit.engine.sampling import (
    Sampler,
    as_int64,
    counter_uniforms,
    process_logits,
    sample_from_logits,
    sample_native,
    sample_top_p,
)

V = 40


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny(seed=0, init=0.3):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      initializer_range=init, eos_token_id=None, bos_token_id=None, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def word_tokenizer():
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(V)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def hf_first_step_probs(model, prompt, **kw):
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=1,
                         output_scores=True, return_dict_in_generate=True, **kw)
    return out.scores[0][0].double().softmax(-1).numpy()


@pytest.mark.parametrize("kw", [
    dict(temperature=0.8, top_p=0.9, top_k=0),  # the study's shape: rejection sampling of the nucleus
    dict(temperature=1.3, top_p=0.95, top_k=7),
    dict(temperature=0.7, top_p=1.0, top_k=0),
])
def test_first_step_distribution_matches_hf(kw):
    model = tiny()
    prompt = [3, 9, 4, 17, 22, 5, 8]
    expected = hf_first_step_probs(model, prompt, **kw)
    engine = Engine(model, None, block_size=4, max_num_seqs=2000)
    counts = np.zeros(V)
    for seed in range(2):
        params = SamplingParams(n=2000, max_new_tokens=1, seed=seed, **kw)
        out = engine.generate([prompt], params, progress=False)
        for c in out[0]:
            counts[c.token_ids[0]] += 1
    assert counts[expected == 0].sum() == 0, "sampled a token that HF's warpers remove"
    n = counts.sum()
    keep = expected * n >= 5  # pool the rare tokens into one bin
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(expected[keep] * n, expected[~keep].sum() * n)
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    assert keep.sum() >= 3
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-3


@pytest.mark.parametrize("scale", [0.05, 1.0, 4.0])  # flat, moderate, peaked distributions
def test_top_p_rejection_sampler_is_the_nucleus_distribution(scale):
    torch.manual_seed(0)
    x = torch.randn(3, 30, dtype=torch.float64) * scale
    expected = process_logits(x, SamplingParams(temperature=1.0, top_p=0.8)).softmax(-1)
    N = 40000
    keys = torch.arange(N, dtype=torch.int64) * 7919
    ctr = torch.zeros(N, dtype=torch.int64)
    for rounds in (8, 0):  # rejection, and the sorting fallback
        for r in range(3):
            tok = sample_top_p(x[r:r + 1].expand(N, -1).contiguous(), 0.8, keys, ctr, max_rounds=rounds)
            freq = torch.bincount(tok, minlength=30).double() / N
            assert (freq[expected[r] == 0] == 0).all()
            assert (freq - expected[r]).abs().max() < 5 * (0.25 / N) ** 0.5  # 5 sigma


def _native_top_p(x, top_p, keys, ctr, max_rounds):
    assert native() is not None and hasattr(native(), "sample_rows_f32"), "build reversalkit._C"
    return sample_native(x.float(), 1.0, top_p, keys, ctr, max_rounds=max_rounds)


@pytest.mark.parametrize("scale", [0.05, 1.0, 4.0])
def test_native_sampler_is_the_nucleus_distribution(scale):
    """The C++ sampler (rejection, and with max_rounds=0 its sorting fallback) against the nucleus."""
    torch.manual_seed(0)
    x = torch.randn(2, 37, dtype=torch.float64) * scale
    N = 40000
    keys = torch.arange(N, dtype=torch.int64) * 7919 + 3
    ctr = torch.full((N,), 5, dtype=torch.int64)
    for top_p in (0.8, 1.0):
        expected = process_logits(x, SamplingParams(temperature=1.0, top_p=top_p)).softmax(-1)
        for rounds in (8, 0):
            for r in range(2):
                tok = _native_top_p(x[r:r + 1].expand(N, -1).contiguous(), top_p, keys, ctr, rounds)
                freq = torch.bincount(tok, minlength=37).double() / N
                assert (freq[expected[r] == 0] == 0).all()
                assert (freq - expected[r]).abs().max() < 5 * (0.25 / N) ** 0.5  # 5 sigma


@pytest.mark.parametrize("top_p", [0.9, 1.0])
def test_native_sampler_draws_the_torch_paths_tokens(top_p):
    """Same uniforms, same algorithm: the C++ rows equal the torch path's tokens but for draws
    that land within float rounding of a CDF step (a few in a million)."""
    torch.manual_seed(1)
    B, V, T = 3000, 1003, 0.7  # V not a multiple of the 16-token blocks
    logits = torch.randn(B, V) * torch.linspace(0.1, 6.0, B)[:, None]  # flat to peaked rows
    keys = torch.randint(-2**62, 2**62, (B,))
    ctr = torch.randint(0, 500, (B,))
    params = SamplingParams(temperature=T, top_p=top_p)
    got = Sampler(params)(logits, keys, ctr)[0]
    want = Sampler(params, use_native=False)(logits, keys, ctr)[0]
    assert _native_top_p(logits[:1], top_p, keys[:1], ctr[:1], 8) is not None
    assert (got != want).sum() <= 2
    torch.set_num_threads(2)  # rows split over threads: the same tokens
    assert torch.equal(Sampler(params)(logits, keys, ctr)[0], got)
    torch.set_num_threads(1)
    lo = logits[:, :500]  # strided rows (a view of a wider buffer)
    oracle = Sampler(params, use_native=False)
    assert (Sampler(params)(lo, keys, ctr)[0] != oracle(lo, keys, ctr)[0]).sum() <= 2


def test_counter_uniforms_match_splitmix_reference():
    def ref(key, ctr):
        m = (1 << 64) - 1
        x = (key + ctr * 0x9E3779B97F4A7C15) & m
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
        x ^= x >> 31
        return ((x >> 11) + 0.5) * 2.0 ** -53

    rng = np.random.default_rng(0)
    keys = [int(k) for k in rng.integers(0, 2**63, 50)] + [2**64 - 1, 0]
    ctrs = [int(c) for c in rng.integers(0, 10**6, len(keys))]
    got = counter_uniforms(torch.tensor([as_int64(k) for k in keys]), torch.tensor(ctrs))
    assert got.tolist() == [ref(k, c) for k, c in zip(keys, ctrs)]
    u = counter_uniforms(torch.zeros(10000, dtype=torch.int64), torch.arange(10000))
    assert 0 < u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01


def test_inverse_cdf_never_picks_zero_probability_tokens():
    x = torch.tensor([[0.0, float("-inf"), 0.0, float("-inf")]]).expand(4, -1)
    tok = sample_from_logits(x, torch.tensor([1e-16, 0.5, 0.5 + 1e-12, 1 - 1e-16], dtype=torch.float64))
    assert set(tok.tolist()) <= {0, 2}


def test_seeded_samples_do_not_depend_on_the_batch():
    model = tiny(init=0.1)
    engine = Engine(model, None, block_size=4)
    a = [5, 6, 7, 8, 9, 10, 11]
    others = [[1, 2, 3], [5, 6, 7, 8, 9, 12, 13, 14, 15], [30] * 11]
    params = SamplingParams(n=4, temperature=0.9, top_p=0.95, max_new_tokens=20, seed=11)
    alone = engine.generate([a], params, progress=False)[0]
    mixed = engine.generate(others[:2] + [a] + others[2:], params, progress=False)[2]
    assert [c.token_ids for c in alone] == [c.token_ids for c in mixed]
    assert len({tuple(c.token_ids) for c in alone}) > 1, "the n samples of a prompt must differ"
    other_seed = engine.generate([a], SamplingParams(**{**params.to_dict(), "seed": 12}), progress=False)[0]
    assert [c.token_ids for c in other_seed] != [c.token_ids for c in alone]


def test_stop_strings_cut_the_text():
    model = tiny(init=0.5)
    tok = word_tokenizer()
    engine = Engine(model, tok, block_size=4)
    prompt = "w3 w9 w4 w17"
    free = engine.generate([prompt], SamplingParams(temperature=0, max_new_tokens=12), progress=False)[0][0]
    words = free.text.split()
    assert len(words) == 12 and free.finish_reason == "length"
    stop = f"{words[4]} {words[5]}"
    # the sample ends at the first token whose text completes the stop string
    end = next(j for j in range(1, 13) if stop in tok.decode(free.token_ids[:j]))
    params = SamplingParams(temperature=0, max_new_tokens=12, stop=(stop, "w39 w39 w39"))
    out = engine.generate([prompt], params, progress=False)[0][0]
    assert out.finish_reason == "stop"
    assert out.token_ids == free.token_ids[:end]
    assert out.text == free.text[:free.text.find(stop)]


def test_logprobs_are_the_models():
    model = tiny(init=0.2)
    prompt = [3, 9, 4, 17]
    params = SamplingParams(temperature=0, max_new_tokens=6, logprobs=True)
    out = Engine(model, None).generate([prompt], params, progress=False)[0][0]
    ids = torch.tensor([prompt + out.token_ids])
    with torch.no_grad():
        logp = model(ids).logits[0].double().log_softmax(-1)
    ref = [logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(out.token_ids)]
    np.testing.assert_allclose(out.token_logprobs, ref, rtol=1e-4, atol=1e-4)
    assert out.cumulative_logprob == pytest.approx(sum(ref), abs=1e-3)
    plain = Engine(model, None).generate([prompt], SamplingParams(temperature=0, max_new_tokens=2),
                                         progress=False)
    assert plain[0][0].cumulative_logprob is None
