"""The sampler's model against transformers: greedy output token for token equal to HF generate
(fp32, CPU) on random tiny Llama / Mistral / Qwen2 configs, RoPE tables, weight reloading."""

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from reversalkit.engine import Engine, SamplingParams
from reversalkit.engine.model import ModelSpec, rope_inv_freq

V = 97
COMMON = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, bos_token_id=None, pad_token_id=0)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def make(kind: str, seed: int = 0, eos: int | None = None):
    torch.manual_seed(seed)
    if kind == "llama":
        m = LlamaForCausalLM(LlamaConfig(**COMMON, eos_token_id=eos, tie_word_embeddings=True,
                                         rope_parameters=LLAMA3_ROPE))
    elif kind == "mistral":
        m = MistralForCausalLM(MistralConfig(**COMMON, eos_token_id=eos, sliding_window=7,
                                             tie_word_embeddings=False))
    else:  # Qwen2 with q/k/v biases and a sliding window on its second layer
        m = Qwen2ForCausalLM(Qwen2Config(**COMMON, eos_token_id=eos, tie_word_embeddings=True,
                                         use_sliding_window=True, sliding_window=6, max_window_layers=1))
    with torch.no_grad():  # transformers initialises biases and norms trivially; make them matter
        for name, p in m.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.5)
    return m.eval()


def prompts(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(3, V, (21,), generator=g).tolist()
    out = [prefix + torch.randint(3, V, (k,), generator=g).tolist() for k in (1, 6, 11, 27)]
    return out + [torch.randint(3, V, (5,), generator=g).tolist()]  # shares nothing


def hf_greedy(model, p, max_new):
    ids = torch.tensor([p])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False)
    return out[0, len(p):].tolist()


@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2"])
@pytest.mark.parametrize("backend", ["rows", "reference"])
def test_greedy_equals_hf_generate(kind, backend):
    model = make(kind)
    ps = prompts()
    # EOS = a token the model emits early for one prompt, so some samples stop before the limit
    eos = hf_greedy(model, ps[2], 8)[4]
    model.config.eos_token_id = model.generation_config.eos_token_id = eos
    engine = Engine(model, None, block_size=4, decode_backend=backend)
    outs = engine.generate(ps, SamplingParams(temperature=0, max_new_tokens=40), progress=False)
    stopped = 0
    for p, o in zip(ps, outs):
        ref = hf_greedy(model, p, 40)
        assert o[0].token_ids == ref
        assert o[0].finish_reason == ("stop" if ref[-1] == eos else "length")
        stopped += ref[-1] == eos
    assert stopped >= 1


def test_greedy_n_samples_are_identical_and_hit_the_context_limit():
    model = make("llama")
    model.config.eos_token_id = model.generation_config.eos_token_id = None
    p = prompts()[3]  # 48 tokens; context 128
    params = SamplingParams(temperature=0, n=3, max_new_tokens=500)
    outs = Engine(model, None, block_size=4).generate([p], params, progress=False)
    assert [o.token_ids for o in outs[0]] == [hf_greedy(model, p, 128 - len(p))] * 3
    assert all(o.finish_reason == "length" and len(o.token_ids) == 128 - len(p) for o in outs[0])


@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2"])
def test_sampled_groups_on_rows_equal_the_paged_reference(kind):
    """n samples per prompt on the CPU rows (each prompt's tail stored once as a sample group,
    Mistral's and Qwen2's windows reaching into it) give the tokens of the gather-based paged
    reference; an early eos makes finished rows move."""
    model = make(kind)
    ps = prompts()
    eos = hf_greedy(model, ps[1], 6)[3]
    model.config.eos_token_id = model.generation_config.eos_token_id = eos
    params = SamplingParams(n=4, temperature=1.0, top_p=0.9, max_new_tokens=30, seed=7)
    rows = Engine(model, None, block_size=4, decode_backend="rows", max_num_seqs=8)
    ref = Engine(model, None, block_size=4, decode_backend="reference", max_num_seqs=8)
    got, want = rows.generate(ps, params, progress=False), ref.generate(ps, params, progress=False)
    assert [[c.token_ids for c in o] for o in got] == [[c.token_ids for c in o] for o in want]
    assert any(c.finish_reason == "stop" for o in got for c in o)
    assert any(c.finish_reason == "length" for o in got for c in o)


LINEAR_ROPE = {"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0}


@pytest.mark.parametrize("rope", [None, LLAMA3_ROPE, LINEAR_ROPE])
def test_rope_frequencies_match_transformers(rope):
    cfg = LlamaConfig(**COMMON, rope_parameters=rope) if rope else LlamaConfig(**COMMON)
    hf = LlamaForCausalLM(cfg).model.rotary_emb
    ours, scale = rope_inv_freq(cfg, 16)
    torch.testing.assert_close(ours, hf.original_inv_freq.float(), rtol=0, atol=0)
    assert scale == hf.attention_scaling


def test_unsupported_models_get_clear_errors():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match="unsupported architecture"):
        Engine(gpt2, None)
    cfg = LlamaConfig(**COMMON, hidden_act="gelu")
    with pytest.raises(ValueError, match="activation"):
        ModelSpec.from_config(cfg)
    dyn = LlamaConfig(**COMMON, rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0})
    with pytest.raises(ValueError, match="dynamic"):
        Engine(LlamaForCausalLM(dyn), None)


def test_load_weights_refreshes_the_engine():
    a, b = make("qwen2", seed=0), make("qwen2", seed=5)
    for m in (a, b):
        m.config.eos_token_id = m.generation_config.eos_token_id = None
    ps = prompts()
    engine = Engine(a, None, block_size=4)
    params = SamplingParams(temperature=0, max_new_tokens=12)
    before = engine.generate(ps, params, progress=False)
    assert [o[0].token_ids for o in before] == [hf_greedy(a, p, 12) for p in ps]
    engine.load_weights(b.state_dict())  # the cached prefix of a's KV must not survive
    after = engine.generate(ps, params, progress=False)
    assert [o[0].token_ids for o in after] == [hf_greedy(b, p, 12) for p in ps]
    with pytest.raises(KeyError, match="lacks"):
        engine.load_weights({k: v for k, v in b.state_dict().items() if "layers.1." not in k})


def test_engine_from_checkpoint_directory(tmp_path):
    model = make("mistral")
    model.config.eos_token_id = model.generation_config.eos_token_id = None
    model.save_pretrained(tmp_path)
    p = prompts()[1]
    params = SamplingParams(temperature=0, max_new_tokens=10)
    out = Engine(str(tmp_path), None, block_size=8).generate([p], params, progress=False)
    assert out[0][0].token_ids == hf_greedy(model, p, 10)


def test_padded_lm_head_gives_the_unpadded_logits():
    """The lm_head padded to a multiple of 16 rows (V = 97) gives the unpadded logits exactly."""
    import torch.nn.functional as F  # noqa: PLC0415

    from reversalkit.engine.model import LlamaFamilyModel  # noqa: PLC0415

    model = LlamaFamilyModel.from_hf(make("llama"), device="cpu", dtype=torch.float32)
    assert model.lm_head.shape[0] == 112
    x = torch.randn(5, model.spec.hidden_size, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.logits(x), F.linear(model._rms_norm(x, model.norm), model.embed))


@pytest.mark.parametrize("width", [64, 128, 768, 100])
def test_model_rms_norm_is_bitwise_torch(width):
    """The model's residual-add + RMSNorm equals torch's F.rms_norm bit for bit at any width (the C++
    pass where it mirrors torch's float order, torch elsewhere): greedy parity rests on it."""
    import torch.nn.functional as F  # noqa: PLC0415

    from reversalkit.engine.model import LlamaFamilyModel, ModelSpec  # noqa: PLC0415

    cfg = LlamaConfig(**{**COMMON, "hidden_size": width, "num_attention_heads": 2, "num_key_value_heads": 2})
    model = LlamaFamilyModel(ModelSpec.from_config(cfg), torch.ones(width // 4), 1.0, device="cpu",
                             dtype=torch.float32)
    torch.manual_seed(width)
    x = torch.randn(50, width) * torch.logspace(-2, 2, 50)[:, None]
    r, w = torch.randn(50, width), torch.randn(width)
    xc = x.clone()
    got = model._rms_norm(xc, w, residual=r)
    assert torch.equal(xc, x + r)
    assert torch.equal(got, F.rms_norm(x + r, (width,), w, model.spec.rms_eps))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU interpreter run; on CUDA the Triton ops are the "
                    "default and benchmarks/gpu_engine.py checks greedy output against HF")
@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_engine_with_triton_ops_equals_hf_greedy(kind):
    """The model's CUDA path (Triton RMSNorm, SiLU-mul and RoPE), run on the CPU in fp32."""
    model = make(kind)
    engine = Engine(model, None, block_size=4, decode_backend="reference")
    engine.model.ops_backend = "triton"
    ps = prompts()[:3]
    outs = engine.generate(ps, SamplingParams(temperature=0, max_new_tokens=12), progress=False)
    for p, o in zip(ps, outs):
        assert o[0].token_ids == hf_greedy(model, p, 12)
