"""The engine's sampling: the first-step distribution matches transformers' (chi-square), seeds
reproduce whatever shares the batch, stop strings, log-probabilities. The sampling op's paths are
checked against its reference in test_kernels_sample_top_p.py."""

import numpy as np
import pytest
import torch
from reversalkit.kernels.sample_top_p import sample_top_p
from scipy import stats
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM

from reversalkit.engine import Engine, SamplingParams
from reversalkit.engine.sampling import Sampler

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


@pytest.mark.gpu
def test_sampler_runs_the_triton_path_on_cuda():
    g = torch.Generator().manual_seed(5)
    logits = (torch.randn(64, 32000, generator=g) * 3).cuda().bfloat16()
    keys, ctr = torch.randint(-2**62, 2**62, (64,), generator=g).cuda(), torch.randint(0, 500, (64,)).cuda()
    got = Sampler(SamplingParams(temperature=0.75, top_p=0.95))(logits, keys, ctr)[0]
    assert torch.equal(got, sample_top_p(logits, 0.75, 0.95, keys, ctr, backend="triton"))


def test_sampler_applies_top_k_and_reports_logprobs():
    g = torch.Generator().manual_seed(6)
    logits, keys, ctr = torch.randn(8, V, generator=g), torch.arange(8), torch.zeros(8, dtype=torch.int64)
    tokens, logprobs = Sampler(SamplingParams(temperature=0.9, top_k=3, logprobs=True))(logits, keys, ctr)
    assert torch.equal(tokens, sample_top_p(logits, 0.9, 1.0, keys, ctr, top_k=3))
    assert torch.allclose(logprobs, logits.log_softmax(-1).gather(1, tokens[:, None]).squeeze(1), atol=1e-6)


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
