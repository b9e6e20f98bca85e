"""DPO reference log-probs taken from the sampler: equal to the reference pass where they apply,
computed by the pass everywhere else."""

import math
from types import SimpleNamespace

import pytest
import torch
from train_fixtures import sft_examples, toy_model, toy_tokenizer

from reversalkit.engine import Engine
from reversalkit.study import StudyConfig, rollout, stages
from reversalkit.train import DPOTrainConfig, TrainConfig, train_sft
from reversalkit.train.data import encode_many

MAX_LENGTH = 128


class ToyTask:
    """The training fixtures' questions as a task; which samples count as correct is set by hand."""

    stop = ()

    def __init__(self):
        self.problems = [SimpleNamespace(id=str(k), prompt=e.prompt, meta={})
                         for k, e in enumerate(sft_examples(8))]

    def format_prompt(self, problem):
        return problem.prompt

    def is_correct(self, problem, text):
        return text.strip().endswith(str(int(problem.id) * 2))


@pytest.fixture(scope="module")
def trained():
    """A toy model taught the fixtures' completions, so that its samples end with eos."""
    tok = toy_tokenizer()
    model = toy_model(len(tok), seed=1)
    torch.manual_seed(0)
    train_sft(model, tok, sft_examples(16), TrainConfig(lr=1e-2, epochs=30, max_steps=60, batch_size=8,
                                                        max_length=MAX_LENGTH), progress=False)
    return model.eval(), tok


def _samples(model, tok, task, ids=True, max_new_tokens=48):
    engine = Engine(model, tok, device="cpu")
    records = rollout.generate(engine, task, task.problems, n=6, temperature=1.0,
                               max_new_tokens=max_new_tokens, seed=3, progress=False,
                               training_ids=stages.training_ids(tok, MAX_LENGTH) if ids else None)
    for r in records:  # alternate correct and incorrect: every problem gets three pairs
        r["correct"] = r["i"] % 2 == 0
    return records


def _pairs(task, records):
    cfg = StudyConfig.preset("tiny").replace(pairs_per_problem=None)
    by_id = {p.id: p for p in task.problems}
    pairs, _ = stages.round_data(cfg, "dpo", "m1-d", records, by_id, task)
    prompts = {p.id: p.prompt for p in task.problems}
    return pairs, prompts


def test_sampled_reference_equals_the_reference_pass(trained):
    model, tok = trained
    task = ToyTask()
    records = _samples(model, tok, task)
    with_lp = [r for r in records if r["lp"] is not None]
    assert len(with_lp) >= len(records) // 2, "the toy model should stop with eos in most samples"
    assert all(r["finish"] == "stop" for r in with_lp)
    pairs, prompts = _pairs(task, records)
    sampled = stages.sampled_reference(pairs, records, prompts)
    full = stages.compute_reference(model, tok, pairs, DPOTrainConfig(max_length=MAX_LENGTH, batch_size=4))
    have = ~torch.isnan(sampled)
    assert have.sum() >= sampled.numel() // 2
    # float32 sums of ~20 log-probs: the two paths differ in rounding only (a sampler log-prob at
    # temperature 1.0 versus 0.75, or one missing eos term, would be off by far more than 1e-3).
    torch.testing.assert_close(sampled[have], full[have], rtol=0, atol=1e-3)
    assert (full[have].abs() > 0.1).all()


def test_pairs_without_sampled_logprobs_go_through_the_pass(trained):
    model, tok = trained
    task = ToyTask()
    records = _samples(model, tok, task)
    pairs, prompts = _pairs(task, records)
    tcfg = DPOTrainConfig(max_length=MAX_LENGTH, batch_size=4)
    full = stages.compute_reference(model, tok, pairs, tcfg)
    for r in records[::3]:
        r["lp"] = None
    sampled = stages.sampled_reference(pairs, records, prompts)
    loads = []

    def load():
        loads.append(1)
        return model, tok

    ref, reused = stages.dpo_reference(pairs, tcfg, load, sampled=sampled)
    missing = torch.isnan(sampled).any(1)
    assert 0 < missing.sum() < len(pairs) and reused == len(pairs) - int(missing.sum()) and loads == [1]
    assert not torch.isnan(ref).any()
    torch.testing.assert_close(ref, full, rtol=0, atol=1e-3)
    # everything from the sampler: the model is never loaded; nothing sampled: all from the pass
    ref_all, reused_all = stages.dpo_reference(pairs, tcfg, lambda: pytest.fail("loaded"), sampled=full)
    assert reused_all == len(pairs) and torch.equal(ref_all, full)
    ref_none, reused_none = stages.dpo_reference(pairs, tcfg, load, sampled=None)
    assert reused_none == 0
    torch.testing.assert_close(ref_none, full, rtol=0, atol=1e-5)


def test_no_logprob_where_the_training_sequence_differs_from_the_sample(trained):
    model, tok = trained
    task = ToyTask()
    # cut by length: training appends an eos the sampler never drew
    short = _samples(model, tok, task, max_new_tokens=3)
    assert short and all(r["finish"] == "length" and r["lp"] is None for r in short)
    # a training encoding that differs from the sampled ids (here: truncated to 8 tokens)
    engine = Engine(model, tok, device="cpu")
    cut = lambda prompts, texts: [e.ids for e in encode_many(tok, prompts, texts, 8)]  # noqa: E731
    records = rollout.generate(engine, task, task.problems, n=2, temperature=1.0, max_new_tokens=48, seed=3,
                               progress=False, training_ids=cut)
    assert all(r["lp"] is None for r in records)
    # a sampler that does not expose its tokenizer: nothing to check the ids against
    comp = SimpleNamespace(text="x", token_ids=[1, 2], cumulative_logprob=-1.0, finish_reason="stop")
    blind = SimpleNamespace(generate=lambda prompts, params, progress: [[comp] for _ in prompts])
    got = rollout.generate(blind, task, task.problems[:2], n=1, temperature=1.0, max_new_tokens=4, seed=0,
                           progress=False, training_ids=stages.training_ids(tok, MAX_LENGTH))
    assert [r["lp"] for r in got] == [None, None]
    # without training_ids the records carry no "lp" at all
    plain = rollout.generate(engine, task, task.problems[:1], n=1, temperature=1.0, max_new_tokens=8, seed=3,
                             progress=False)
    assert "lp" not in plain[0]


@pytest.mark.parametrize("overrides, device, exact", [
    ({}, "cpu", True),
    ({"dtype": "bfloat16"}, "cpu", False),
    ({}, "cuda", False),  # bf16 weights and autocast on a GPU
    ({"dtype": "float32"}, "cuda", False),  # autocast still on
    ({"dtype": "float32", "dpo_train": {"autocast_bf16": "off"}}, "cuda", True),
    ({"reference_from_samples": False}, "cpu", False),
    ({"methods": ["sft"]}, "cpu", False),  # no DPO round needs a reference
])
def test_sampled_logprobs_exact_only_in_float32_without_autocast(overrides, device, exact):
    cfg = StudyConfig.from_dict({**StudyConfig.preset("tiny").to_dict(), **overrides})
    assert stages.sampled_logprobs_exact(cfg, device) is exact


def test_sampled_reference_keeps_nan_for_unknown_texts():
    from reversalkit.train import DPOPair

    pairs = [DPOPair("q", "a", "b"), DPOPair("q", "a", "c")]
    records = [{"id": "1", "text": "a", "lp": -1.5}, {"id": "1", "text": "b", "lp": -2.5},
               {"id": "1", "text": "c", "lp": None}]
    ref = stages.sampled_reference(pairs, records, {"1": "q"})
    assert ref[0].tolist() == [-1.5, -2.5] and ref[1, 0] == -1.5 and math.isnan(ref[1, 1])
    assert stages.sampled_reference([], records, {"1": "q"}).shape == (0, 2)


def test_generate_sets_equals_a_call_per_set_and_evaluate_sets_merges_greedy(trained):
    """Sets generated in one engine call give each set's own records (greedy and sampled: a
    sample's random stream depends on its prompt, not its batch); evaluate_sets runs the greedy
    passes of tasks with the same stop strings as one call, and keeps other tasks apart."""
    model, tok = trained
    task = ToyTask()
    a, b = task.problems[:5], task.problems[5:]
    engine = Engine(model, tok, device="cpu")
    calls = []
    generate = engine.generate
    engine.generate = lambda prompts, params, progress=True: calls.append(len(prompts)) or generate(
        prompts, params, progress)
    for n, temperature in ((1, 0.0), (3, 1.0)):
        kw = dict(n=n, temperature=temperature, max_new_tokens=24, seed=5, progress=False)
        merged = rollout.generate_sets(engine, [(task, a), (task, b)], **kw)
        alone = [rollout.generate(engine, task, ps, **kw) for ps in (a, b)]
        assert merged == alone and [len(r) for r in merged] == [5 * n, 3 * n]
    stopper = ToyTask()
    stopper.stop = ("\n",)
    with pytest.raises(ValueError, match="same stop strings"):
        rollout.generate_sets(engine, [(task, a), (stopper, b)], n=1, temperature=0.0, max_new_tokens=8,
                              seed=0)
    cfg = StudyConfig.preset("tiny").replace(max_new_tokens=24, eval_samples=2, ood_eval_samples=0,
                                             sbert_model="none", bootstrap=10)
    calls.clear()
    out = stages.evaluate_sets(engine, {"id": (task, a), "ood": (task, b)}, cfg, sbert=None, progress=False)
    assert calls == [8, 5]  # one greedy call for both sets, then the ID set's samples
    assert [len(out[s][1]) for s in ("id", "ood")] == [5, 3] and len(out["id"][2]) == 10
    calls.clear()
    stages.evaluate_sets(engine, {"id": (task, a), "ood": (stopper, b)}, cfg, sbert=None, progress=False)
    assert calls == [5, 3, 5]
