"""Wall-clock per stage of one round of the tiny study: reversalkit beside the peer pipeline.

    python -m benchmarks.bench_study [--quick] [--m1 runs/tiny/nodes/m1/model]

Both pipelines start from the same M1, sample the same train problems, and train on the same D_t.
Stages: sample (N completions per train problem: the paged engine vs HF `generate` with
num_return_sequences), reward (the task checker; shared code), train (reversalkit `train_sft` /
`train_dpo` vs TRL `SFTTrainer` / `DPOTrainer` with precomputed reference log-probs, same
hyperparameters; reversalkit takes the reference log-probs from the sampler as the study does, and
a second row shows it with a reference forward pass like TRL's), evaluate (greedy + N samples per
ID and OOD test problem, then the metrics; generation by each pipeline, metrics shared). Each stage
runs once per provider, or --repeat times with the providers taking turns (medians; on a machine
whose speed drifts, the drift then weighs on both pipelines alike); rows show seconds and the
speedup over the peer. Without --m1 the benchmark first trains a quick M1 with the tiny preset's M1 recipe
(fewer steps with --quick).
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from benchmarks.harness import Case, format_table, run_cases  # noqa: E402


class HFSampler:
    """HF `generate` behind the engine's `generate(prompts, params)` interface (the peer sampler)."""

    def __init__(self, model, tok, batch_sequences: int = 256):
        self.model, self.tok, self.batch_sequences = model, tok, batch_sequences

    @torch.no_grad()
    def generate(self, prompts, params, progress=False):
        from types import SimpleNamespace  # noqa: PLC0415

        self.model.eval()
        torch.manual_seed(params.seed or 0)
        per_call = max(1, self.batch_sequences // params.n)
        out = []
        for start in range(0, len(prompts), per_call):
            chunk = prompts[start:start + per_call]
            enc = self.tok(chunk, return_tensors="pt", padding=True)
            greedy = params.temperature == 0
            kw = {"do_sample": False} if greedy else {"do_sample": True, "temperature": params.temperature,
                                                      "top_p": params.top_p, "top_k": 0}
            gen = self.model.generate(**enc, max_new_tokens=params.max_new_tokens,
                                      num_return_sequences=params.n, pad_token_id=self.tok.pad_token_id,
                                      eos_token_id=self.tok.eos_token_id, **kw)
            new = gen[:, enc["input_ids"].shape[1]:]
            texts = self.tok.batch_decode(new, skip_special_tokens=True)
            for j in range(len(chunk)):
                rows = []
                for k in range(params.n):
                    ids = new[j * params.n + k].tolist()
                    n_tok = ids.index(self.tok.eos_token_id) + 1 if self.tok.eos_token_id in ids else len(ids)
                    rows.append(SimpleNamespace(text=texts[j * params.n + k], token_ids=ids[:n_tok],
                                                finish_reason="stop" if n_tok < len(ids) else "length"))
                out.append(rows)
        return out


# TRL's configs default to bf16 autocast and gradient checkpointing; reversalkit trains this model in
# fp32 without checkpointing, so the peer does the same work at the same precision.
SAME_PRECISION = {"bf16": False, "fp16": False, "gradient_checkpointing": False}


def trl_sft(model, tok, data, tcfg, out_dir: str) -> None:
    from datasets import Dataset  # noqa: PLC0415
    from trl import SFTConfig, SFTTrainer  # noqa: PLC0415

    ds = Dataset.from_list([{"prompt": e.prompt, "completion": e.completion} for e in data])
    args = SFTConfig(output_dir=out_dir, per_device_train_batch_size=tcfg.batch_size, learning_rate=tcfg.lr,
                     num_train_epochs=tcfg.epochs, lr_scheduler_type="constant",
                     warmup_steps=tcfg.warmup_steps, max_length=tcfg.max_length,
                     max_grad_norm=tcfg.max_grad_norm or 0.0, weight_decay=tcfg.weight_decay, report_to=[],
                     save_strategy="no", logging_strategy="no", use_cpu=not torch.cuda.is_available(),
                     seed=tcfg.seed, dataloader_num_workers=0, disable_tqdm=True, **SAME_PRECISION)
    SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok).train()


def trl_dpo(model, tok, data, tcfg, out_dir: str) -> None:
    from datasets import Dataset  # noqa: PLC0415
    from trl import DPOConfig, DPOTrainer  # noqa: PLC0415

    ds = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in data])
    args = DPOConfig(output_dir=out_dir, per_device_train_batch_size=tcfg.batch_size, learning_rate=tcfg.lr,
                     num_train_epochs=tcfg.epochs, lr_scheduler_type="constant",
                     warmup_steps=tcfg.warmup_steps, max_length=tcfg.max_length,
                     max_grad_norm=tcfg.max_grad_norm or 0.0, beta=tcfg.beta, loss_type=[tcfg.loss_type],
                     precompute_ref_log_probs=True, report_to=[], save_strategy="no", logging_strategy="no",
                     use_cpu=not torch.cuda.is_available(), seed=tcfg.seed, dataloader_num_workers=0,
                     disable_tqdm=True, **SAME_PRECISION)
    DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok).train()


def get_m1(cfg, ws, m1_path: str | None, m1_steps: int):
    from reversalkit import models  # noqa: PLC0415
    from reversalkit.study import stages  # noqa: PLC0415

    if m1_path:
        return models.load_model(m1_path, device="cpu", dtype="float32"), models.load_tokenizer(m1_path)
    model, tok = ws.base_model()
    c = cfg.replace(m1_train=cfg.m1_train.replace(max_steps=m1_steps))
    t0 = time.perf_counter()
    stages.train_m1(model, tok, ws.task, ws.train, c, progress=False)
    print(f"trained a benchmark M1 in {m1_steps} steps ({time.perf_counter() - t0:.0f} s)")
    return model, tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small round (fewer problems and samples)")
    ap.add_argument("--m1", help="M1 checkpoint directory (e.g. runs/tiny/nodes/m1/model)")
    ap.add_argument("--m1-steps", type=int, default=None, help="steps of the quick M1 when --m1 is not given")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per stage and provider, taking turns; the tables show medians")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from reversalkit.engine import Engine  # noqa: PLC0415
    from reversalkit.study import StudyConfig, rollout, stages  # noqa: PLC0415
    from reversalkit.study.store import RunStore  # noqa: PLC0415
    from reversalkit.study.workspace import Workspace  # noqa: PLC0415
    from reversalkit.train import reference_logprobs, train_dpo, train_sft  # noqa: PLC0415

    cfg = StudyConfig.preset("tiny").replace(device="cpu", progress=False)
    if args.quick:
        cfg = cfg.replace(train_size=64, test_size=32, ood_size=32, samples_per_problem=4, eval_samples=4,
                          pass_k=[1, 2, 4])
    tmp = tempfile.mkdtemp(prefix="bench_study_")
    ws = Workspace(cfg, RunStore.open(Path(tmp) / "run", cfg.to_dict()))
    model, tok = get_m1(cfg, ws, args.m1, args.m1_steps or (60 if args.quick else 400))
    engine = Engine(model, tok, device="cpu", block_size=cfg.block_size, tune_malloc=True)
    peer = HFSampler(model, tok)
    sbert = ws.sbert()

    def sample(sampler, tokenizer=None):
        return stages.sample_train(sampler, ws.task, ws.sample_problems(1), cfg, "bench", progress=False,
                                   tokenizer=tokenizer)

    records = sample(engine, tok)  # the shared D_t comes from the reversalkit samples
    sft_data, _ = stages.round_data(cfg, "sft", "bench-s", records, ws.train_by_id, ws.task)
    dpo_data, _ = stages.round_data(cfg, "dpo", "bench-d", records, ws.train_by_id, ws.task)
    sft_cfg = stages.round_train_config(cfg, "sft", "bench-s")
    dpo_cfg = stages.round_train_config(cfg, "dpo", "bench-d")
    print(f"D_t: {len(sft_data)} SFT examples, {len(dpo_data)} DPO pairs from {len(records)} samples")

    def reward():
        rollout.reward(ws.task, ws.sample_problems(1), [dict(r) for r in records])

    def rk_sft():
        train_sft(copy.deepcopy(model), tok, sft_data, sft_cfg, progress=False)

    prompts = {p.id: ws.task.format_prompt(p) for p in ws.sample_problems(1)}

    def rk_dpo():  # as the study does it: the reference log-probs come with the samples
        m = copy.deepcopy(model)
        sampled = stages.sampled_reference(dpo_data, records, prompts)
        ref, _ = stages.dpo_reference(dpo_data, dpo_cfg, lambda: (m, tok), sampled=sampled)
        train_dpo(m, tok, dpo_data, ref, dpo_cfg, progress=False)

    def rk_dpo_pass():  # with a reference forward pass over D_t, as TRL does
        m = copy.deepcopy(model)
        ref = reference_logprobs(m, tok, dpo_data, dpo_cfg)
        train_dpo(m, tok, dpo_data, ref, dpo_cfg, progress=False)

    def evaluate(sampler):
        stages.evaluate_sets(sampler, ws.eval_sets, cfg, sbert=sbert, progress=False)

    hf, sft_peer, dpo_peer = "peer: HF generate", "peer: TRL SFTTrainer", "peer: TRL DPOTrainer"

    def peer_sft():
        trl_sft(copy.deepcopy(model), tok, sft_data, sft_cfg, tmp + "/sft")

    def peer_dpo():
        trl_dpo(copy.deepcopy(model), tok, dpo_data, dpo_cfg, tmp + "/dpo")

    cases = [
        Case("sample", {"reversalkit": lambda: sample(engine, tok), hf: lambda: sample(peer)}, baseline=hf),
        Case("reward", {"reversalkit": reward, hf: reward}, baseline=hf),
        Case("train (SFT round)", {"reversalkit": rk_sft, sft_peer: peer_sft}, baseline=sft_peer),
        Case("train (DPO round)", {"reversalkit": rk_dpo, "reversalkit, reference pass": rk_dpo_pass,
                                   dpo_peer: peer_dpo}, baseline=dpo_peer),
        Case("evaluate", {"reversalkit": lambda: evaluate(engine), hf: lambda: evaluate(peer)}, baseline=hf),
    ]
    rows = run_cases("study", cases, warmup=0, repeat=args.repeat, measure_memory=False,
                     interleave=args.repeat > 1)
    print_totals(rows)


def print_totals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Full-round totals: sample + reward + train + evaluate, for an SFT round and a DPO round.

    A reversalkit variant that only some stages have (the DPO round with a reference pass) takes
    the plain reversalkit time of the other stages.
    """
    t = {(r["case"], "peer" if r["provider"].startswith("peer") else r["provider"]): r["median_s"]
         for r in rows}
    variants = sorted({p for _, p in t if p not in ("peer", "reversalkit")})
    out = []
    rounds = (("full SFT round", "train (SFT round)"), ("full DPO round", "train (DPO round)"))
    for label, train_case in rounds:
        stages_ = ("sample", "reward", train_case, "evaluate")
        if not all((s, p) in t for s in stages_ for p in ("peer", "reversalkit")):
            continue
        peer = sum(t[(s, "peer")] for s in stages_)
        out.append({"case": label, "provider": "peer", "is_baseline": True, "median_s": peer, "min_s": peer,
                    "max_s": peer, "work_unit": ""})
        for provider in ["reversalkit"] + [v for v in variants if (train_case, v) in t]:
            rk = sum(t.get((s, provider), t[(s, "reversalkit")]) for s in stages_)
            out.append({"case": label, "provider": provider, "is_baseline": False, "median_s": rk,
                        "min_s": rk, "max_s": rk, "speedup": peer / rk, "work_unit": ""})
    if out:
        print(format_table("study totals", out))
    return out


if __name__ == "__main__":
    main()
