"""Sampler throughput: reversalkit's engine beside Hugging Face `generate` and `generate_batch`.

The workload is shaped like the study: every prompt = one shared few-shot prefix + a short
question, n samples per prompt (temperature 0.75, top-p 0.95, the paper's settings), a fixed number
of new tokens (EOS is disabled so every provider produces exactly the same number of tokens).
Models are random (same weights for every provider): the embedded default's tiny Llama (hidden
128, 4 layers, 4 heads / 2 KV heads, ~1.1k word-level vocab, context 256) and a ~100M Llama
(fewer prompts). Output tokens per second. Each model gets two cases of equal work per provider:
all prompts with HF generate as the baseline, and a subset with HF generate_batch as the baseline
(continuous batching in transformers is several times slower than generate on CPU, so the full
workload would take it most of an hour). Note: on a 2-core machine shared with other processes,
`--threads 1` avoids OpenMP stalls that slow every provider down by 5-50x.

    python -m benchmarks.bench_sampler            # 256 prompts x n=8 x 128 tokens (tiny), 16 prompts (100M)
    python -m benchmarks.bench_sampler --quick    # smaller, for a smoke run
    python -m benchmarks.bench_sampler --study 64 --models tiny   # study-shaped, reversalkit only
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from benchmarks.harness import Case, run_cases

WORDS = ("the a an and of to in is was has had how many more less each total left gave bought sold "
         "apples books pens coins cars dogs cats eggs cups boxes bags friends students teachers days "
         "weeks hours minutes dollars cents he she they we it his her their then so if what much "
         "question answer step first second third next finally".split())


def build_tokenizer():
    """Word-level tokenizer (integers 0..999 are single tokens) with <pad> <bos> <eos> <unk>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + [str(i) for i in range(1000)] + list(WORDS)
                                        + list("+-*/=.,?:") + ["<<", ">>", "####"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins tokens with spaces
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")


def _problem(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 9)
    noun = rng.choice(["apples", "books", "pens", "coins", "eggs", "cups"])
    return f"question : he has {a} {noun} and bought {b} more . he gave {c} to each friend . how many left ?"


def _solution(rng: random.Random, q: str) -> str:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    return f"answer : {a} + {b} = << {a} + {b} = {a + b} >> {a + b} #### {a + b}"


def build_prompts(num_prompts: int, shots: int = 2, seed: int = 0) -> list[str]:
    """Shared few-shot prefix (~85 tokens for 2 shots) + one question (~23 tokens) each."""
    rng = random.Random(seed)
    prefix = " ".join(f"{_problem(rng)} {_solution(rng, '')}" for _ in range(shots))
    return [f"{prefix} {_problem(rng)} answer :" for _ in range(num_prompts)]


def llama_config(kind: str, vocab_size: int):
    from transformers import LlamaConfig  # noqa: PLC0415

    sizes = {
        "tiny": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=256),
        "100m": dict(hidden_size=768, intermediate_size=2304, num_hidden_layers=12, num_attention_heads=12,
                     num_key_value_heads=4, max_position_embeddings=512),
        "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                   num_key_value_heads=8, max_position_embeddings=2048),
    }[kind]
    # No EOS: every provider generates exactly max_new_tokens per sample.
    return LlamaConfig(vocab_size=vocab_size, tie_word_embeddings=True, pad_token_id=0, bos_token_id=1,
                       eos_token_id=None, **sizes)


def build_model(kind: str, vocab_size: int, *, device="cpu", dtype=torch.float32, seed: int = 0):
    from transformers import LlamaForCausalLM  # noqa: PLC0415

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(llama_config(kind, vocab_size))
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.to(device=device, dtype=dtype).eval()


def hf_generate(model, tok, prompts, n, max_new, batch_prompts, temperature=0.75, top_p=0.95) -> int:
    """HF generate over chunks of prompts with num_return_sequences=n; returns tokens produced."""
    tok.padding_side = "left"
    produced = 0
    for i in range(0, len(prompts), batch_prompts):
        enc = tok(prompts[i:i + batch_prompts], return_tensors="pt", padding=True).to(model.device)
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                                 num_return_sequences=n, max_new_tokens=max_new)
        produced += (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    return produced


def hf_generate_batch(model, tok, prompts, n, max_new, temperature=0.75, top_p=0.95) -> int:
    """transformers' continuous batching (`generate_batch`); returns tokens produced.

    On CPU its cache is sized explicitly: left to itself it sizes static buffers from system
    memory and spends tens of seconds filling them (measured: 22 s of 29 s for 256 tokens).
    """
    from transformers import GenerationConfig  # noqa: PLC0415
    from transformers.generation.configuration_utils import ContinuousBatchingConfig  # noqa: PLC0415

    ids = [tok(p)["input_ids"] for p in prompts]
    cfg = GenerationConfig(do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                           max_new_tokens=max_new, num_return_sequences=n, eos_token_id=-1, pad_token_id=0)
    cb = None
    if model.device.type == "cpu":  # the best of the settings tried (max_batch_tokens 256-2048, pages 32-256)
        cb = ContinuousBatchingConfig(use_cuda_graph=False, use_async_batching=False, num_blocks=256,
                                      max_batch_tokens=1024)
    with torch.inference_mode():
        res = model.generate_batch(inputs=ids, generation_config=cfg, continuous_batching_config=cb,
                                   progress_bar=False)
    produced = sum(len(r.generated_tokens) for r in res.values())
    if produced < len(prompts) * n * max_new:
        raise RuntimeError(
            f"generate_batch returned {produced} tokens, expected {len(prompts) * n * max_new}")
    return produced


def reversalkit_generate(engine, prompts, n, max_new, temperature=0.75, top_p=0.95) -> int:
    from reversalkit.engine import SamplingParams  # noqa: PLC0415

    outs = engine.generate(prompts, SamplingParams(n=n, temperature=temperature, top_p=top_p,
                                                   max_new_tokens=max_new, seed=0), progress=False)
    return sum(len(c.token_ids) for o in outs for c in o)


def study_cases(kind: str, num_prompts: int) -> list[Case]:
    """The study's zero-shot sampling step: ~25-token prompts, n=8, 96 new tokens, temperature 1.0,
    top-p 1.0 (a full pass over the vocabulary per token), reversalkit alone. Prints CPU time too."""
    from reversalkit.engine import Engine  # noqa: PLC0415

    tok = build_tokenizer()
    prompts = build_prompts(num_prompts, shots=0)
    engine = Engine(build_model(kind, len(tok)), tok, tune_malloc=True)
    n, max_new = 8, 96

    def run() -> int:
        c0 = time.process_time()
        out = reversalkit_generate(engine, prompts, n, max_new, temperature=1.0, top_p=1.0)
        print(f"[bench_sampler] study {kind}: cpu {time.process_time() - c0:.2f}s, "
              f"engine loop {engine.stats['seconds']:.2f}s")
        return out

    return [Case(f"{kind} study {num_prompts}x{n}x{max_new} T=1 p=1", {"reversalkit": run},
                 baseline="reversalkit", params={"model": kind, "n": n, "max_new_tokens": max_new,
                                                 "prompts": num_prompts, "shots": 0},
                 work=num_prompts * n * max_new, work_unit="tok")]


def make_cases(kind: str, num_prompts: int, n: int, max_new: int, hf_batch_prompts: int,
               batch_prompts: int, skip: set[str]) -> list[Case]:
    """Two cases per model, each comparing equal work: all prompts (HF generate as the baseline)
    and a subset (HF generate_batch as the baseline; it is ~4x slower than generate on CPU)."""
    from reversalkit.engine import Engine  # noqa: PLC0415

    tok = build_tokenizer()
    prompts = build_prompts(num_prompts)
    model = build_model(kind, len(tok))
    engine = Engine(model, tok, tune_malloc=True)
    plen = len(tok(prompts[0])["input_ids"])
    params = {"model": kind, "n": n, "max_new_tokens": max_new, "prompt_tokens": plen}
    sub = prompts[:batch_prompts]
    cases = [
        Case(f"{kind} {num_prompts}x{n}x{max_new}", {
            "hf generate": lambda: hf_generate(model, tok, prompts, n, max_new, hf_batch_prompts),
            "reversalkit": lambda: reversalkit_generate(engine, prompts, n, max_new),
        }, baseline="hf generate", params={**params, "prompts": num_prompts,
                                           "hf_rows_per_call": hf_batch_prompts * n},
             work=num_prompts * n * max_new, work_unit="tok"),
        Case(f"{kind} {batch_prompts}x{n}x{max_new}", {
            "hf generate_batch": lambda: hf_generate_batch(model, tok, sub, n, max_new),
            "reversalkit": lambda: reversalkit_generate(engine, sub, n, max_new),
        }, baseline="hf generate_batch", params={**params, "prompts": batch_prompts},
             work=batch_prompts * n * max_new, work_unit="tok"),
    ]
    for case in cases:
        case.providers = {k: v for k, v in case.providers.items() if k not in skip}
        if case.baseline not in case.providers:
            case.baseline = "reversalkit"
    return [c for c in cases if c.providers]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small workload (smoke run)")
    ap.add_argument("--skip", default="", help="comma-separated providers to skip")
    ap.add_argument("--models", default="tiny,100m", help="comma-separated: tiny, 100m")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="timed runs per provider, providers taking turns (median reported)")
    ap.add_argument("--study", type=int, default=0,
                    help="only the study-shaped case (zero-shot, n=8, 96 tokens, T=1, top-p 1) with this "
                         "many prompts")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    shapes = {  # (prompts, n, new tokens, prompts per HF generate call (x n rows), generate_batch prompts)
        "tiny": (32, 8, 32, 8, 8) if args.quick else (256, 8, 128, 8, 16),
        "100m": (4, 8, 16, 4, 2) if args.quick else (16, 8, 128, 4, 4),
    }
    print(f"[bench_sampler] torch threads: {torch.get_num_threads()}")
    cases = []
    for kind in [m.strip() for m in args.models.split(",") if m.strip()]:
        t0 = time.perf_counter()
        cases += study_cases(kind, args.study) if args.study else make_cases(kind, *shapes[kind], skip=skip)
        print(f"[bench_sampler] built {kind} in {time.perf_counter() - t0:.1f}s")
    run_cases("sampler", cases, warmup=0, repeat=args.repeat, measure_memory=False, save=not args.quick,
              interleave=True)


if __name__ == "__main__":
    main()
