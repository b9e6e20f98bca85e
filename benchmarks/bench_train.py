"""Benchmark: CPU training with the fused RMSNorm / SwiGLU kernels (reversalkit.train.cpu_ops) vs HF's ops.

Cases, each provider timed in turn with the other (forward + backward, float32):
  rmsnorm      LlamaRMSNorm over a micro-batch of the tiny preset (64 x 66 tokens, H=128)
  mlp          LlamaMLP (gate/up/down GEMMs + silu * up) on the same tokens, intermediate 512
  sft steps    optimizer steps of M1's training in the tiny preset (train_sft on the synthetic task's
               gold solutions, from the untrained tiny Llama); its losses are checked to agree first
Providers: "hf" (the model's own modules) and "fused" (inside `fused_cpu_ops`); with --compile, the
sft steps case adds "compiled": HF's modules with the decoder under `torch.compile(dynamic=True)`,
compiled once (the warm-up call) and reset to the same weights before every call.

    python -m benchmarks.bench_train            # 40 SFT steps per call
    python -m benchmarks.bench_train --quick    # 8 steps
    python -m benchmarks.bench_train --quick --compile --cases sft
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import tempfile
from pathlib import Path

import torch

from benchmarks.harness import Case, run_cases
from reversalkit._ext import native
from reversalkit.train.cpu_ops import fused_cpu_ops

TOKENS = (64, 66)  # a round's SFT micro-batch: 64 examples of ~66 tokens


def _module_case(name: str, module: torch.nn.Module, width: int) -> Case:
    x = torch.randn(*TOKENS, width, generator=torch.Generator().manual_seed(0), requires_grad=True)
    upstream = torch.randn_like(module(x))

    def run(fused: bool):
        def call():
            with fused_cpu_ops(module, enabled=fused):
                x.grad = None
                module.zero_grad(set_to_none=True)
                module(x).backward(upstream)

        return call

    return Case(f"{name} fwd+bwd {TOKENS[0]}x{TOKENS[1]}x{width}", {"hf": run(False), "fused": run(True)},
                baseline="hf", params={"tokens": TOKENS[0] * TOKENS[1], "width": width},
                work=TOKENS[0] * TOKENS[1], work_unit="tok")


def _sft_case(steps: int, compiled: bool = False) -> Case:
    import reversalkit.train.step as step_module
    from reversalkit.study import StudyConfig
    from reversalkit.study.stages import gold_completions
    from reversalkit.study.store import RunStore
    from reversalkit.study.workspace import Workspace
    from reversalkit.train import SFTExample, train_sft

    cfg = StudyConfig.preset("tiny").replace(device="cpu", progress=False)
    ws = Workspace(cfg, RunStore.open(Path(tempfile.mkdtemp()) / "run", cfg.to_dict()))
    model, tok = ws.base_model()
    examples = [SFTExample(ws.task.format_prompt(p), s) for p in ws.train
                for s in gold_completions(p, cfg.m1_all_solutions)]
    tcfg = cfg.m1_train.replace(max_steps=steps)
    own = step_module.fused_cpu_ops

    def run(fused: bool):
        def call():
            step_module.fused_cpu_ops = own if fused else (lambda m, enabled=True: contextlib.nullcontext(0))
            try:
                return train_sft(copy.deepcopy(model), tok, examples, tcfg, progress=False).losses
            finally:
                step_module.fused_cpu_ops = own

        return call

    providers = {"hf": run(False), "fused": run(True)}
    if compiled:
        providers["compiled"] = _compiled_run(model, tok, examples, tcfg, own)
    hf = providers["hf"]()
    for name, call in providers.items():
        if name != "hf":
            worst = max(abs(a - b) / abs(a) for a, b in zip(hf, call(), strict=True))
            if worst > 1e-4:
                raise SystemExit(f"{name} and HF training losses differ by {worst:.3g} (relative); "
                                 "not timing")
            print(f"sft steps: {name} losses agree with HF's within {worst:.2g} (relative) "
                  f"over {steps} steps")
    tokens = steps * tcfg.batch_size  # examples per call; the throughput column counts examples
    return Case(f"sft steps x{steps}, tiny preset M1 training", providers,
                baseline="hf", params={"steps": steps}, work=tokens, work_unit="ex")


def _compiled_run(model, tok, examples, tcfg, own):
    """HF's modules, the decoder compiled once; every call starts from `model`'s weights (copied in
    place, so the compiled graph stays valid) and runs the same steps as the other providers."""
    import reversalkit.train.step as step_module
    from reversalkit.train import train_sft

    work = copy.deepcopy(model)
    start = [(v, v.clone()) for v in work.state_dict().values()]
    work.model = torch.compile(work.model, dynamic=True)  # base_model resolves to the compiled module

    def call():
        with torch.no_grad():
            for v, v0 in start:
                v.copy_(v0)
        step_module.fused_cpu_ops = lambda m, enabled=True: contextlib.nullcontext(0)
        try:
            return train_sft(work, tok, examples, tcfg, progress=False).losses
        finally:
            step_module.fused_cpu_ops = own

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 SFT steps per call instead of 40")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compile", action="store_true",
                        help="also time the SFT steps with the decoder under torch.compile (compiles first)")
    parser.add_argument("--cases", nargs="+", choices=("rmsnorm", "mlp", "sft"),
                        default=("rmsnorm", "mlp", "sft"))
    args = parser.parse_args()
    if native() is None:
        raise SystemExit("reversalkit._C is not built; run `pip install -e .` first")
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

    torch.manual_seed(0)
    norm = LlamaRMSNorm(128)
    mlp = LlamaMLP(LlamaConfig(hidden_size=128, intermediate_size=512))
    cases = [_module_case("rmsnorm", norm, 128)] if "rmsnorm" in args.cases else []
    cases += [_module_case("mlp", mlp, 128)] if "mlp" in args.cases else []
    cases += [_sft_case(8 if args.quick else 40, args.compile)] if "sft" in args.cases else []
    run_cases("train", cases, warmup=1, repeat=args.repeat, measure_memory=False, interleave=True)


if __name__ == "__main__":
    main()
