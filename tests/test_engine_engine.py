"""Engine facade: forced preemption gives the same outputs, bad input fails clearly, string
prompts with a transformers tokenizer, the progress bar, and both block-manager implementations."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from reversalkit.engine import Completion, Engine, SamplingParams
from reversalkit.engine.sequence import Sequence

V = 60


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny(seed=0, eos=None):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=96,
                      initializer_range=0.2, eos_token_id=eos, bos_token_id=1, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def hf_tokenizer():
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2} | {f"w{i}": i for i in range(3, V)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>")


def prompts():
    g = torch.Generator().manual_seed(3)
    prefix = torch.randint(3, V, (18,), generator=g).tolist()
    return [prefix + torch.randint(3, V, (k,), generator=g).tolist() for k in (2, 7, 13, 4, 9)]


def ids(outs):
    return [[c.token_ids for c in o] for o in outs]


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0, max_new_tokens=30),
    SamplingParams(n=3, temperature=0.9, top_p=0.9, max_new_tokens=30, seed=4),
])
def test_forced_preemption_gives_identical_outputs(params):
    model = tiny(eos=7)
    ps = prompts()
    free = Engine(model, None, block_size=4)
    ref = free.generate(ps, params, progress=False)
    assert free.stats["preemptions"] == 0
    # room for ~2 running samples: decoding must preempt and recompute again and again
    spec = free.model.spec
    block_bytes = 2 * spec.num_layers * 4 * spec.num_kv_heads * spec.head_dim * 4
    tight = Engine(model, None, block_size=4, kv_cache_memory=26 * block_bytes)
    got = tight.generate(ps, params, progress=False)
    assert tight.stats["preemptions"] > 0
    assert ids(got) == ids(ref)
    assert [[c.finish_reason for c in o] for o in got] == [[c.finish_reason for c in o] for o in ref]
    assert tight.block_manager.num_free() == tight.num_blocks  # everything released


def test_bad_input_gives_clear_errors():
    engine = Engine(tiny(), None)
    with pytest.raises(ValueError, match="empty"):
        engine.generate([], SamplingParams())
    with pytest.raises(ValueError, match="context is 96"):
        engine.generate([[5] * 96], SamplingParams())
    with pytest.raises(ValueError, match="n must be"):
        SamplingParams(n=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-0.1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(TypeError, match="list"):
        engine.generate("w3 w4", SamplingParams())
    with pytest.raises(ValueError, match="outside"):
        engine.generate([[5, V]], SamplingParams())
    with pytest.raises(ValueError, match="tokenizer"):
        engine.generate(["w3 w4"], SamplingParams())
    with pytest.raises(ValueError, match="no tokens"):
        engine.generate([[]], SamplingParams())
    with pytest.raises(ValueError, match="max_num_seqs"):
        engine.generate([[5, 6]], SamplingParams(n=2000))
    with pytest.raises(ValueError, match="kv_cache_memory"):
        Engine(tiny(), None, kv_cache_memory=10).generate([[5, 6]], SamplingParams())
    # the engine stays usable after an error
    assert len(engine.generate([[5, 6]], SamplingParams(max_new_tokens=3), progress=False)[0]) == 1


def test_string_prompts_texts_and_progress_bar(capsys):
    tok = hf_tokenizer()
    model = tiny(eos=2)
    engine = Engine(model, tok, block_size=8)
    texts = ["w5 w9 w12 w40", "w5 w9 w12 w41 w42"]
    params = SamplingParams(n=2, temperature=0.8, max_new_tokens=12, seed=0)
    outs = engine.generate(texts, params, progress=True)
    assert "tok/s" in capsys.readouterr().err
    for text, o in zip(texts, outs):
        assert len(o) == 2 and all(isinstance(c, Completion) for c in o)
        for c in o:
            assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
            assert c.finish_reason in ("stop", "length")
            assert (c.token_ids[-1] == 2) == (c.finish_reason == "stop")
        ids_ = torch.tensor([tok(text)["input_ids"]])  # BOS added like transformers' generate input
        greedy = model.generate(ids_, attention_mask=torch.ones_like(ids_), do_sample=False,
                                max_new_tokens=12)
        mine = engine.generate([text], SamplingParams(temperature=0, max_new_tokens=12), progress=False)
        assert mine[0][0].token_ids == greedy[0, ids_.shape[1]:].tolist()
    # strings and token-id lists in one call: each prompt as if given alone
    mixed = engine.generate([texts[0], tok(texts[1])["input_ids"]], params, progress=False)
    assert [[c.token_ids for c in o] for o in mixed] == [[c.token_ids for c in o] for o in outs]


def test_prefix_is_computed_once_and_released():
    engine = Engine(tiny(), None, block_size=4)
    ps = prompts()
    outs = engine.generate(ps, SamplingParams(n=2, temperature=0.5, max_new_tokens=5, seed=1), progress=False)
    assert engine.block_manager.num_free() == engine.num_blocks
    assert engine.runner.prefix_len == 16  # 18 shared tokens, whole blocks of 4
    assert engine.stats["tokens"] == sum(len(c.token_ids) for o in outs for c in o)


def test_cuda_graph_buckets_and_parked_rows():
    """Graph replay pads a batch to its bucket; the padding rows must only touch the scratch block
    and leave the real rows' logits unchanged (checked eagerly, on CPU)."""
    from reversalkit.engine.cuda_graphs import DecodeGraphs, buckets

    assert buckets(512)[:9] == [1, 2, 4, 8, 16, 32, 64, 128, 192] and buckets(512)[-1] == 512
    assert buckets(6) == [1, 2, 4, 6]
    engine = Engine(tiny(), None, block_size=4, decode_backend="reference", max_num_seqs=8)
    run, sched = engine.runner, engine.scheduler
    run.begin([], 0, 96)
    for i, p in enumerate(prompts()[:3]):
        sched.add(Sequence(seq_id=sched.new_id(), request_id=i, sample_index=0, token_ids=p,
                           num_prompt_tokens=len(p), max_tokens=90, rng_key=0))
    batch = sched.schedule_prefill()
    run.prefill(batch)
    run.init_rows(sched.admit(batch), batch)
    run.row_tokens[:3] = torch.tensor([5, 6, 7])
    graphs = DecodeGraphs(run.max_rows, scratch_block=engine.num_blocks)
    before = run.cache.data.clone()
    with torch.inference_mode():
        want = run.forward_decode(3)
        graphs._park(run, 3, 8)
        run.row_tokens[3:8] = 9  # token 0 is padding (zero embedding): make the parked writes visible
        got = run.forward_decode(8)[:3]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)  # GEMM blocking differs with batch size
    changed = (run.cache.data != before).flatten(3).any(-1).any(0).any(0)  # (blocks,)
    owned = {b for s in sched.running for b in s.block_table} | {engine.num_blocks}
    assert set(changed.nonzero().flatten().tolist()) <= owned
    assert changed[engine.num_blocks]


class _FakeGraph:
    """Stands in for torch.cuda.CUDAGraph on the CPU; the test below gives it a faithful replay."""

    def __init__(self):
        self.replay = lambda: None

    def pool(self):
        return None


class _FakeStream:
    def wait_stream(self, other):
        pass


def test_cuda_graph_capture_keeps_live_rows_and_new_weights_recapture(monkeypatch):
    """Capture happens on the first decode step, with live sequences in rows 0..B-1: it must leave
    their state as it found it; and load_weights must drop graphs that read the old weights. CUDA's
    graph API is replaced by stand-ins whose replay reruns the step eagerly into the captured output."""
    import contextlib

    from reversalkit.engine.cuda_graphs import DecodeGraphs

    for name, fake in (("Stream", _FakeStream), ("current_stream", _FakeStream), ("CUDAGraph", _FakeGraph),
                       ("stream", lambda s: contextlib.nullcontext()), ("synchronize", lambda: None),
                       ("graph", lambda g, pool=None: contextlib.nullcontext())):
        monkeypatch.setattr(torch.cuda, name, fake)

    class ReplayingGraphs(DecodeGraphs):
        def capture(self, r):
            super().capture(r)
            for b, g in self.graphs.items():
                g.replay = lambda b=b: self.outputs[b].copy_(r.forward_decode(b))

    params = SamplingParams(n=2, temperature=0, max_new_tokens=20)
    make = lambda seed: Engine(tiny(seed), None, block_size=4, decode_backend="reference", max_num_seqs=8)
    want = [ids(make(seed).generate(prompts(), params, progress=False)) for seed in (0, 1)]
    engine = make(0)
    engine.runner.graphs = ReplayingGraphs(8, scratch_block=engine.num_blocks)
    assert ids(engine.generate(prompts(), params, progress=False)) == want[0]
    assert engine.runner.graphs.graphs and engine.runner.graphs.failed is None
    engine.load_weights(tiny(1).state_dict())
    assert not engine.runner.graphs.graphs  # recaptured on the next decode step
    assert ids(engine.generate(prompts(), params, progress=False)) == want[1]


def test_release_memory_frees_the_cache_and_the_next_generate_rebuilds_it():
    """What the study does around each training step on a GPU: same outputs after a release, and
    after a release followed by new weights."""
    params = SamplingParams(n=2, temperature=0.8, top_p=0.9, max_new_tokens=12, seed=7)
    engine = Engine(tiny(), None, block_size=4)
    first = ids(engine.generate(prompts(), params, progress=False))
    engine.release_memory()
    assert engine.runner is None
    assert ids(engine.generate(prompts(), params, progress=False)) == first
    engine.release_memory()
    engine.load_weights(tiny(1).state_dict())
    want = ids(Engine(tiny(1), None, block_size=4).generate(prompts(), params, progress=False))
    assert ids(engine.generate(prompts(), params, progress=False)) == want



def test_cpu_default_rows_follow_the_kv_budget():
    """Default max_num_seqs on the CPU: 1024 rows where full-length sequences are small, 256 where
    2 GiB of KV holds fewer than that, and in between the number that fits."""
    from reversalkit.engine.engine import _CPU_KV_CAP, cpu_rows

    block = 16 * 256  # 16 tokens of 256 B of K and V each
    assert cpu_rows(96, 16, block) == 1024
    assert cpu_rows(2 << 20, 16, block) == 256  # a 2M-token context: one sequence fits
    assert cpu_rows(16384, 16, block) == int(_CPU_KV_CAP / (1.1 * 1024 * block)) == 465
    assert Engine(tiny(), None, block_size=16).scheduler.cfg.max_num_seqs == 1024
    assert Engine(tiny(), None, block_size=16, max_num_seqs=8).scheduler.cfg.max_num_seqs == 8


def test_apply_moves_follows_chains_of_moves():
    """Rows 1 and 3 of five finish in one step: the scheduler moves row 4 into row 3, then row 3
    (now holding row 4's sample) into row 1. One gather per buffer must give row 1 row 4's state."""
    from reversalkit.engine.model import LlamaFamilyModel
    from reversalkit.engine.runner import ModelRunner

    run = ModelRunner(LlamaFamilyModel.from_hf(tiny()), num_blocks=8, block_size=4, max_rows=5)
    run.begin([], 0, 40, 10)
    for r in range(5):
        run.row_tokens[r], run.row_pos[r], run.row_keys[r], run.row_gen[r] = 10 + r, 20 + r, 30 + r, r
        run.block_tables[r, 0] = r
        run.rows.k[:, r] = float(r)
    run.apply_moves([(4, 3), (3, 1)])
    assert run.row_tokens[:3].tolist() == [10, 14, 12] and run.row_pos[:3].tolist() == [20, 24, 22]
    assert run.row_keys[1] == 34 and run.row_gen[1] == 4 and run.block_tables[1, 0] == 4
    assert run.rows.k[:, 1, :, :24].eq(4.0).all() and run.rows.k[:, 2].eq(2.0).all()


def test_tokenizer_adapter_encodes_prompts_of_every_kind_alike():
    """A transformers tokenizer, its `tokenizers.Tokenizer` and a plain object with encode()/decode()
    give the prompt ids transformers' encode gives (BOS included)."""
    from reversalkit.tokenization import TokenizerAdapter

    tok = hf_tokenizer()
    texts = ["w5 w9 w12", "w40", "w3 w3 w7 w8"]
    want = [tok.encode(t) for t in texts]

    class Plain:  # encode/decode only, not callable
        def encode(self, text):
            return tok.encode(text)

        def decode(self, ids, skip_special_tokens=True):
            return tok.decode(ids, skip_special_tokens=skip_special_tokens)

    for t in (tok, tok.backend_tokenizer, Plain()):
        assert TokenizerAdapter(t).encode_many(texts) == want
    with pytest.raises(ValueError, match="need a tokenizer"):
        TokenizerAdapter(None).encode_many(texts)
