"""What a study costs on N GPUs, from measured per-token costs: a written cost model, printed.

    python -m benchmarks.cost_model                       # the gsm8k preset, Llama-2-7B, 8 x H100
    python -m benchmarks.cost_model --gpus 16 --prompt-tokens 120 --completion-tokens 180

Every constant is either measured (benchmarks/RESULTS.md, H100 80GB HBM3: bf16 GEMM ceiling,
device copy bandwidth, the paged decode step's share of its HBM roofline) or a stated assumption
(sequence lengths, accuracy, training MFU, NVLink bandwidth); change them on the command line.
The study's own plan (`StudyConfig.round_kinds`, `method_nodes`) gives how many rounds, sampling
passes and evaluations the preset runs, so the model follows the preset as it changes.

Per stage:
- sampling (decode-bound): each step reads the weights once and every live sequence's own KV;
  the shared prompt's KV is read once per problem group (prefix sharing). Step time =
  bytes / (copy bandwidth x measured roofline share); tokens per step = batch.
- training: 6 x params FLOPs per token trained (forward + backward) at an assumed MFU of the
  measured GEMM ceiling; DPO trains chosen and rejected (reference log-probs come from the sampler).
- FSDP communication per optimizer step: all-gather of the weights for the forward and again for
  the backward, reduce-scatter of the gradients: 3 x (N-1)/N x weight bytes per GPU, against the
  compute of one global batch.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from reversalkit.study.config import StudyConfig
from reversalkit.study.plan import method_nodes, sampled_by

# Measured on NVIDIA H100 80GB HBM3 (benchmarks/RESULTS.md, "Kernels and sampler on GPU").
GEMM_TFLOPS = 756.0          # bf16 matmul ceiling, TFLOP/s
COPY_TBPS = 3.0              # device-to-device copy, TB/s (bytes read + written)
DECODE_ROOFLINE_SHARE = 0.5  # paged decode step: 49-55% of its HBM roofline at batch 128-512


@dataclass
class Model:
    name: str
    params: float       # parameters
    layers: int
    kv_heads: int
    head_dim: int
    bytes_per: int = 2  # bf16

    @property
    def kv_bytes_per_token(self) -> float:
        return self.layers * 2 * self.kv_heads * self.head_dim * self.bytes_per

    @property
    def weight_bytes(self) -> float:
        return self.params * self.bytes_per


MODELS = {"llama2-7b": Model("Llama-2-7B", 6.74e9, 32, 32, 128),
          "mistral-7b": Model("Mistral-7B", 7.24e9, 32, 8, 128),
          "llama3-8b": Model("Llama-3-8B", 8.03e9, 32, 8, 128)}


def decode_tokens_per_s(m: Model, batch: int, prompt: int, completion: int, group: int) -> float:
    """Tokens per second of one GPU decoding `batch` sequences halfway through their completions."""
    own = batch * (completion / 2) * m.kv_bytes_per_token
    shared = (batch / group) * prompt * m.kv_bytes_per_token
    step_s = (m.weight_bytes + own + shared) / (COPY_TBPS * 1e12 * DECODE_ROOFLINE_SHARE)
    return batch / step_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gsm8k")
    ap.add_argument("--model", default="llama2-7b", choices=sorted(MODELS))
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--train-problems", type=int, default=7473, help="GSM8K train")
    ap.add_argument("--id-test", type=int, default=1319, help="GSM8K test")
    ap.add_argument("--ood-test", type=int, default=5000, help="MATH test")
    ap.add_argument("--prompt-tokens", type=int, default=100, help="assumed mean prompt length")
    ap.add_argument("--completion-tokens", type=int, default=150, help="assumed mean completion length")
    ap.add_argument("--ood-completion-tokens", type=int, default=300, help="assumed, MATH answers")
    ap.add_argument("--accuracy", type=float, default=0.45, help="assumed fraction of correct samples")
    ap.add_argument("--pairs-per-problem", type=float, default=12.0,
                    help="assumed mean DPO pairs per problem (min(#correct, #incorrect), no cap)")
    ap.add_argument("--mfu", type=float, default=0.4, help="assumed training MFU of the GEMM ceiling")
    ap.add_argument("--nvlink-gbps", type=float, default=360.0,
                    help="assumed NCCL bus bandwidth per GPU, GB/s (H100 SXM NVLink 4)")
    ap.add_argument("--decode-batch", type=int, default=256, help="sequences per GPU decode step")
    a = ap.parse_args()

    cfg = StudyConfig.preset(a.preset)
    m = MODELS[a.model]
    n, g = cfg.samples_per_problem, a.gpus
    tok_s = decode_tokens_per_s(m, a.decode_batch, a.prompt_tokens, a.completion_tokens, n)
    ood_tok_s = decode_tokens_per_s(m, a.decode_batch, a.prompt_tokens, a.ood_completion_tokens,
                                    max(1, cfg.samples_for("ood")))
    train_flops_per_s = g * GEMM_TFLOPS * 1e12 * a.mfu

    # what the preset runs: distinct sampling passes, rounds by kind, evaluated iterates
    nodes = {node.name: node for meth in cfg.methods for node in method_nodes(cfg.round_kinds(meth))}
    rounds = [nd for nd in nodes.values() if nd.kind in ("sft", "dpo", "gold")]
    passes = {sampled_by(nd) for nd in rounds}
    sft_rounds = sum(nd.kind in ("sft", "gold") for nd in rounds)
    dpo_rounds = sum(nd.kind == "dpo" for nd in rounds)

    sample_tokens = a.train_problems * n * a.completion_tokens
    sample_s = sample_tokens / (g * tok_s)
    seq = a.prompt_tokens + a.completion_tokens
    sft_tokens = a.train_problems * n * a.accuracy * seq
    dpo_tokens = a.train_problems * a.pairs_per_problem * 2 * seq
    sft_s = 6 * m.params * sft_tokens / train_flops_per_s
    dpo_s = 6 * m.params * dpo_tokens / train_flops_per_s
    id_eval_s = a.id_test * (cfg.eval_samples + 1) * a.completion_tokens / (g * tok_s)
    ood_n = cfg.samples_for("ood") + 1
    ood_eval_s = a.ood_test * ood_n * a.ood_completion_tokens / (g * ood_tok_s)
    evals = len(nodes)

    step_seqs = cfg.sft_train.batch_size * cfg.sft_train.grad_accum
    step_compute = 6 * m.params * step_seqs * seq / train_flops_per_s
    gathers = 2 * cfg.sft_train.grad_accum + 1  # weights gathered per micro-batch, fwd and bwd; grads once
    step_comm = gathers * (g - 1) / g * m.weight_bytes / (a.nvlink_gbps * 1e9)
    state = 16 * m.params / g / 2**30  # bf16 weights + grads, fp32 AdamW moments + master, sharded

    def mins(s: float) -> str:
        return f"{s / 60:8.1f}"

    print(f"{m.name} ({m.params / 1e9:.2f}B, KV {m.kv_bytes_per_token / 2**20:.2f} MiB/token) on {g} GPUs, "
          f"preset {a.preset}: N={n}, {len(cfg.methods)} methods, T={cfg.iterations}")
    print(f"decode: {tok_s:,.0f} tokens/s per GPU at batch {a.decode_batch} (ID), {ood_tok_s:,.0f} (OOD)")
    print(f"{'stage':<34}{'per unit (min)':>15}{'units':>7}{'total (min)':>13}")
    rows = [("sample train problems (pass)", sample_s, len(passes)),
            ("SFT / gold round training", sft_s, sft_rounds),
            ("DPO round training", dpo_s, dpo_rounds),
            (f"evaluate ID ({cfg.eval_samples}+greedy)", id_eval_s, evals),
            (f"evaluate OOD ({ood_n - 1}+greedy)", ood_eval_s, evals)]
    total = 0.0
    for name, s, k in rows:
        total += s * k
        print(f"{name:<34}{mins(s):>15}{k:>7}{mins(s * k):>13}")
    print(f"{'study (M1 training not included)':<34}{'':>15}{'':>7}{mins(total):>13}")
    print(f"FSDP step ({step_seqs} sequences): compute {step_compute:.2f} s, communication {step_comm:.2f} s "
          f"({gathers} weight all-gathers / reduce-scatters of {m.weight_bytes / 2**30:.1f} GiB), "
          f"{100 * step_comm / (step_comm + step_compute):.0f}% of the step when not overlapped; "
          f"sharded training state {state:.1f} GiB per GPU before activations")


if __name__ == "__main__":
    main()
