"""StudyConfig: every knob of an iterative self-improvement study, with its documented default.

Loaded from YAML (`StudyConfig.from_yaml`), a preset (`StudyConfig.preset("tiny")`) and CLI
`key=value` overrides (`with_overrides`, dotted keys reach the nested training configs). Defaults
follow the paper where it states a value (N = 50, temperature 0.75, top-p 0.95, continue from
M_{t-1}) and the documented choices of reversalkit where it does not (beta 0.1, sigmoid loss, no
NLL term, reference = M_{t-1}, pairs per problem = min(#correct, #incorrect)).

    reversalkit study --config study.yaml --set iterations=3 --set sft_train.lr=1e-4
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from typing import Any

from reversalkit.config import Config, check, option
from reversalkit.train import DPOTrainConfig, TrainConfig

METHODS = ("sft", "dpo", "sft_dpo", "gold")
REFERENCES = ("previous", "m1")
INITS = ("continue", "reset")
SFT_SELECTIONS = ("all", "dedup")
SAMPLE_DRAWS = ("fixed", "fresh")
# Study-level DPO keys of earlier versions, now read from dpo_train only.
LEGACY_DPO_KEYS = ("beta", "loss_type", "nll_weight")
# Keys added after runs were stored, with the value that reproduces those runs (study level, and
# in each training config).
ADDED_KEYS: dict[str, Any] = {"m1_is_samples": 0}
ADDED_TRAIN_KEYS: dict[str, Any] = {"data_parallel": "ddp"}
# Keys that may change between a run and its resume without changing any number.
NON_RESULT_KEYS = ("out_dir", "progress", "sbert_batch_size", "seed_jobs")


@dataclasses.dataclass
class TinyModelConfig(Config):
    """Shape of the Llama-architecture model built from scratch when `model: tiny`."""

    hidden_size: int = option(128, "hidden width")
    num_layers: int = option(4, "decoder layers")
    num_heads: int = option(4, "attention heads")
    num_kv_heads: int = option(2, "key/value heads (grouped-query attention when < num_heads)")
    intermediate_size: int | None = option(None, "MLP width; None = the model builder's default")
    max_position_embeddings: int = option(256, "context length; prompt + completion must fit")
    max_number: int = option(999, "integers 0..max_number are single tokens of the word tokenizer")

    def __post_init__(self) -> None:
        check(self.hidden_size > 0 and self.num_layers > 0, "tiny_model sizes must be positive")
        check(self.num_heads > 0 and self.hidden_size % self.num_heads == 0,
              f"tiny_model.hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        check(self.num_kv_heads > 0 and self.num_heads % self.num_kv_heads == 0,
              f"tiny_model.num_heads {self.num_heads} must be divisible by num_kv_heads {self.num_kv_heads}")
        check(self.max_position_embeddings >= 16, "tiny_model.max_position_embeddings must be >= 16")


def _train(**kw: Any) -> Any:
    return lambda: TrainConfig(**kw)


def _dpo_train(**kw: Any) -> Any:
    return lambda: DPOTrainConfig(**kw)


def upgrade_config(data: dict[str, Any]) -> dict[str, Any]:
    """A config dict of an earlier version in today's layout: the study-level `beta`, `loss_type` and
    `nll_weight` move into `dpo_train` (a different non-default value already there is an error),
    DPO-only keys at their defaults leave `m1_train` / `sft_train`, which no longer have them, and
    keys added since take the value that reproduces the stored run (`ADDED_KEYS`)."""
    data = {**ADDED_KEYS, **data}
    for name in ("m1_train", "sft_train", "dpo_train"):
        if isinstance(data.get(name), dict):
            data[name] = {**ADDED_TRAIN_KEYS, **data[name]}
    defaults = DPOTrainConfig()
    if any(k in data for k in LEGACY_DPO_KEYS):
        dpo = dict(data.get("dpo_train") or {})
        for key in LEGACY_DPO_KEYS:
            if key not in data:
                continue
            outer = data.pop(key)
            inner = dpo.get(key, getattr(defaults, key))
            check(inner == getattr(defaults, key) or inner == outer,
                  f"{key}={outer!r} conflicts with dpo_train.{key}={inner!r}; DPO settings live in "
                  f"dpo_train only: drop {key}")
            dpo[key] = outer
        data["dpo_train"] = dpo
    dpo_only = {f.name for f in dataclasses.fields(DPOTrainConfig)} - {f.name for f in
                                                                        dataclasses.fields(TrainConfig)}
    for name in ("m1_train", "sft_train"):
        sub = data.get(name)
        if isinstance(sub, dict) and any(k in sub for k in dpo_only):
            data[name] = {k: v for k, v in sub.items()
                          if not (k in dpo_only and v == getattr(defaults, k))}
    return data


@dataclasses.dataclass
class StudyConfig(Config):
    """One study: M1 = SFT on gold, then T-1 rounds of each method, evaluated every iteration."""

    # ---- what is studied -------------------------------------------------------------------
    model: str = option("tiny", "HF hub id or local checkpoint directory of the base model M0; "
                        "'tiny' builds a small Llama from scratch with a word-level tokenizer")
    m1: str | None = option(None, "local checkpoint directory (or hub id) of an already SFT'd model to "
                            "use as M1: M1 training is skipped and the rounds start from it (the "
                            "tokenizer is loaded from the same place); None = train M1 from `model`")
    tiny_model: TinyModelConfig = option(help="shape of the 'tiny' model", factory=TinyModelConfig)
    task: str = option("synthetic", "task name (synthetic, gsm8k, math, csqa, mbpp, or a registered one)")
    task_options: dict[str, Any] = option(help="keyword options of the task (e.g. data_files, sizes)",
                                          factory=dict)
    id_split: str = option("test", "split of the task the in-distribution evaluation reports on "
                           "('test'; recipe sweeps use 'dev' so that test never chooses a recipe)")
    ood_tasks: tuple[str, ...] = option(("test_ood",), "out-of-distribution test sets: a split of the "
                                        "study's task ('test_ood') or 'task:split' (e.g. 'math:test')")
    ood_task_options: dict[str, Any] = option(help="task name -> keyword options for OOD tasks",
                                              factory=dict)
    train_size: int | None = option(None, "use the first N train problems (None = all)")
    test_size: int | None = option(None, "use the first N ID test problems (None = all)")
    ood_size: int | None = option(None, "use the first N problems of each OOD set (None = all)")
    sample_size: int | None = option(None, "self-improvement rounds sample N train problems each "
                                     "(None = all; M1 always trains on every train problem)")
    sample_draw: str = option("fixed", "which N train problems a round samples: 'fixed' (the first N, "
                              "every round) or 'fresh' (a seeded shuffle of the train set cut into "
                              "consecutive blocks of N, one block per iteration, so rounds see new "
                              "problems until the set is used up)")
    methods: tuple[str, ...] = option(("sft", "dpo", "sft_dpo"), "methods to run: sft, dpo, sft_dpo "
                                      "(SFT-DPO alternates, starting with SFT), gold (the control arm of "
                                      "Iterative SFT: each round trains on gold solutions of the problems "
                                      "of SFT's D_t, as many per problem, same steps and learning rate; "
                                      "needs sft)")
    iterations: int = option(5, "T: iterates M1..M_T, i.e. T-1 self-improvement rounds after M1")

    # ---- sampling ------------------------------------------------------------------------
    samples_per_problem: int = option(50, "N: completions sampled per train problem each round")
    eval_samples: int = option(50, "completions sampled per test problem for pass@k and diversity "
                               "(0 = greedy only)")
    temperature: float = option(0.75, "sampling temperature (paper: 0.75)")
    top_p: float = option(0.95, "nucleus sampling mass (paper: 0.95)")
    ood_eval_samples: int | None = option(None, "completions sampled per OOD problem (None = eval_samples; "
                                          "0 = greedy pass@1 only)")
    eval_temperature: float | None = option(None, "temperature of evaluation samples (None = temperature)")
    m1_is_samples: int = option(0, "M1's samples per ID test problem for its pass@N on the improvement sets, "
                                "N = 2, 4, ... up to this (the paper's 2..64); the ones beyond eval_samples "
                                "are drawn once, in step m1/is, and used for nothing else (0 = eval_samples)")
    max_new_tokens: int = option(256, "generation length limit")

    # ---- D_t -----------------------------------------------------------------------------
    sft_selection: str = option("all", "correct samples kept for SFT: 'all' or 'dedup' (distinct texts)")
    sft_max_per_problem: int | None = option(None, "cap of SFT examples per problem (None = no cap)")
    pairs_per_problem: int | None = option(None, "cap of DPO pairs per problem; pairs are "
                                           "min(#correct, #incorrect) up to this cap (None = no cap)")
    reference: str = option("previous", "DPO reference model: 'previous' (M_{t-1}) or 'm1'")
    reference_from_samples: bool = option(True, "when the reference is the model that drew D_t and both "
                                          "run in float32 without autocast, take its log-probs from the "
                                          "sampler instead of a second forward pass over D_t (same values "
                                          "up to float32 rounding)")
    init: str = option("continue", "each round starts from 'continue' (M_{t-1}) or 'reset' (M1)")

    # ---- training ------------------------------------------------------------------------
    m1_all_solutions: bool = option(True, "train M1 on every gold solution in problem.meta['solutions'] "
                                    "when the task lists several (else the canonical solution)")
    m1_train: TrainConfig = option(help="training of M1 on the gold train solutions",
                                   factory=_train(lr=1e-5, epochs=3, batch_size=16))
    sft_train: TrainConfig = option(help="each Iterative SFT round", factory=_train(lr=1e-5, epochs=1,
                                                                                    batch_size=16))
    dpo_train: DPOTrainConfig = option(help="each Iterative DPO round, with the DPO loss (beta, loss_type, "
                                       "nll_weight: the chosen-completion NLL term, 0 = plain DPO)",
                                       factory=_dpo_train(lr=5e-7, epochs=1, batch_size=16))

    # ---- evaluation ----------------------------------------------------------------------
    pass_k: tuple[int, ...] = option((1, 2, 4, 8, 16, 32, 50), "k values of the pass@k curves "
                                     "(values above eval_samples are dropped)")
    sbert_model: str = option("default", "sentence-embedding model for SBERT diversity: 'default' "
                              "(all-MiniLM-L6-v2, offline), a path or id, or 'none' to skip")
    sbert_batch_size: int | None = option(None, "texts per SBERT batch (None = 64 on a CPU, where larger "
                                          "batches pad more and run ~15% slower, 256 on a GPU)")
    diversity_max_problems: int | None = option(None, "compute diversity on the first N test problems "
                                                "(None = all)")
    diversity_group_size: int = option(4, "k: diversity within the correct and within the incorrect "
                                       "samples of a problem is scored on exactly k of them, the k with "
                                       "the lowest sample indices (distinct-n and distinct equations "
                                       "fall with group size, so groups must match); problems with "
                                       "fewer are not scored. Capped at a test set's samples per "
                                       "problem (eval_samples / ood_eval_samples), so every iterate of "
                                       "a study scores groups of one size; must be >= 2")
    sbert_max_problems: int | None = option(None, "SBERT diversity (the costly one: a sentence encoder "
                                            "pass over every text) on the first N problems, in test-set "
                                            "order, that have k samples of the label (None = all)")
    level_key: str = option("level", "problem.meta key holding a difficulty level (per-level accuracy "
                            "and group disparity); ignored when problems have none")
    bootstrap: int = option(1000, "bootstrap resamples for confidence intervals (0 = none)")
    ci: float = option(0.95, "confidence level of the intervals")

    # ---- engine and run ------------------------------------------------------------------
    block_size: int = option(16, "KV-cache block size of the paged engine")
    kv_cache_memory: int | None = option(None, "KV-cache bytes for the engine (None = engine default)")
    seed: int = option(0, "master seed: data order, sampling, pairs; every step derives its own")
    seeds: tuple[int, ...] = option((), "independent replicates: run the whole study (M1 and every round) "
                                    "once per seed in <out_dir>/seed<N>/ and pool them in <out_dir>/report "
                                    "(paired bootstrap CIs over problems); empty = one run with `seed`")
    seed_jobs: int = option(0, "seeds run at once, each a process of num_threads (else cores/N) threads; "
                            "0 = auto: one per two cores, at most one per seed, 1 on CUDA")
    device: str = option("auto", "'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N'")
    num_threads: int | None = option(None, "torch intra-op CPU threads (None = torch's default); results "
                                     "are bit-reproducible for a fixed value")
    dtype: str = option("auto", "'auto' (fp32 on CPU, bf16 on CUDA), 'float32', 'bfloat16', 'float16'")
    out_dir: str = option("runs/study", "run directory (config, manifest, checkpoints, metrics, report)")
    progress: bool = option(True, "show progress bars")

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        self.ood_tasks = tuple(self.ood_tasks)
        self.pass_k = tuple(int(k) for k in self.pass_k)
        self.seeds = tuple(int(x) for x in self.seeds)
        check(len(set(self.seeds)) == len(self.seeds), f"seeds {self.seeds} repeat a seed")
        check(self.seed_jobs >= 0, f"seed_jobs must be >= 0 (0 = auto), got {self.seed_jobs}")
        check(len(self.methods) > 0, "methods must name at least one of " + ", ".join(METHODS))
        bad = [m for m in self.methods if m not in METHODS]
        check(not bad, f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
        check(len(set(self.methods)) == len(self.methods), f"methods {self.methods} repeat a method")
        check("gold" not in self.methods or "sft" in self.methods,
              f"methods {self.methods}: the gold control arm trains on the problems of Iterative SFT's "
              "rounds; add sft to methods")
        check(self.iterations >= 1, f"iterations must be >= 1 (1 = M1 only), got {self.iterations}")
        check(self.samples_per_problem >= 1,
              f"samples_per_problem must be >= 1, got {self.samples_per_problem}")
        check(self.eval_samples >= 0, f"eval_samples must be >= 0, got {self.eval_samples}")
        check(self.m1_is_samples >= 0, f"m1_is_samples must be >= 0, got {self.m1_is_samples}")
        check(self.temperature > 0, f"temperature must be > 0 for sampling, got {self.temperature}")
        check(self.eval_temperature is None or self.eval_temperature > 0,
              f"eval_temperature must be > 0 or None, got {self.eval_temperature}")
        check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        check(self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        check(self.sample_draw in SAMPLE_DRAWS,
              f"sample_draw must be one of {SAMPLE_DRAWS}, got {self.sample_draw!r}")
        check(bool(self.id_split), "id_split must name a split of the task, e.g. 'test' or 'dev'")
        check(self.m1 is None or bool(str(self.m1).strip()),
              "m1 must be a checkpoint directory or hub id, or null to train M1")
        check(self.sft_selection in SFT_SELECTIONS,
              f"sft_selection must be one of {SFT_SELECTIONS}, got {self.sft_selection!r}")
        check(self.ood_eval_samples is None or self.ood_eval_samples >= 0,
              f"ood_eval_samples must be >= 0 or None, got {self.ood_eval_samples}")
        for name in ("sft_max_per_problem", "pairs_per_problem", "train_size", "test_size", "ood_size",
                     "diversity_max_problems", "sample_size", "sbert_max_problems", "sbert_batch_size"):
            v = getattr(self, name)
            check(v is None or v >= 1, f"{name} must be >= 1 or None (no limit), got {v}")
        check(self.diversity_group_size >= 2, f"diversity_group_size must be >= 2 (one text has no "
              f"diversity), got {self.diversity_group_size}")
        check(self.reference in REFERENCES, f"reference must be one of {REFERENCES}, got {self.reference!r}")
        check(self.init in INITS, f"init must be one of {INITS}, got {self.init!r}")
        check(all(k >= 1 for k in self.pass_k), f"pass_k values must be >= 1, got {self.pass_k}")
        check(self.bootstrap >= 0, f"bootstrap must be >= 0, got {self.bootstrap}")
        check(0 < self.ci < 1, f"ci must be in (0, 1), got {self.ci}")
        check(self.num_threads is None or self.num_threads >= 1,
              f"num_threads must be >= 1 or None, got {self.num_threads}")
        check(self.block_size >= 1, f"block_size must be >= 1, got {self.block_size}")
        dev = self.device
        check(dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:"),
              f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {dev!r}")
        check(self.dtype in ("auto", "float32", "bfloat16", "float16"),
              f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        check(bool(self.model), "model must be 'tiny', an HF hub id or a local checkpoint path")
        check(all(":" not in s or all(s.split(":", 1)) for s in self.ood_tasks),
              f"ood_tasks entries look like 'split' or 'task:split', got {self.ood_tasks}")

    # ---- derived -------------------------------------------------------------------------
    @property
    def ks(self) -> tuple[int, ...]:
        """The pass@k values that the evaluation samples support."""
        return tuple(k for k in self.pass_k if k <= self.eval_samples)

    @property
    def m1_extra_samples(self) -> int:
        """M1's samples per ID test problem beyond eval_samples (step m1/is; 0 = no such step)."""
        return max(0, self.m1_is_samples - self.samples_for("id"))

    def ood_task_names(self) -> list[str]:
        """Tasks named by the OOD sets: 'task:split' gives task (which may be 'module:Class'); a bare
        split is one of the study's own task."""
        return [spec.rpartition(":")[0] for spec in self.ood_tasks if ":" in spec]

    def is_ks(self) -> tuple[int, ...]:
        """N of M1's pass@N on the improvement sets: `ks`, and with M1's extra samples also the
        powers of two up to the samples M1 has per ID test problem, and that number."""
        if not self.m1_extra_samples:
            return self.ks
        n = self.samples_for("id") + self.m1_extra_samples
        powers = {1 << i for i in range(1, n.bit_length()) if 1 << i <= n}
        return tuple(sorted({k for k in self.pass_k if k <= n} | powers | ({n} if n >= 2 else set())))

    def samples_for(self, split: str) -> int:
        """Evaluation samples per problem of a test set ('id' or an OOD label)."""
        if split == "id" or self.ood_eval_samples is None:
            return self.eval_samples
        return self.ood_eval_samples

    def round_kinds(self, method: str) -> list[str]:
        """'sft'/'dpo' for rounds t = 2..T of a method."""
        n = self.iterations - 1
        if method == "sft_dpo":
            return ["sft" if r % 2 == 0 else "dpo" for r in range(n)]
        if method == "gold":
            return ["gold"] * n
        return [method] * n

    def result_dict(self) -> dict[str, Any]:
        """The resolved config without the keys that do not change results (for resume checks)."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_RESULT_KEYS}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, *, _where: str = "") -> StudyConfig:
        legacy = [k for k in LEGACY_DPO_KEYS if k in (data or {})]
        check(not legacy, f"config key(s) {', '.join(legacy)} belong to dpo_train: write "
              + ", ".join(f"dpo_train.{k}" for k in legacy) + " (in YAML, under dpo_train:)")
        return super().from_dict(data, _where=_where)

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> StudyConfig:
        """The config a run directory stored, written by this or an earlier version."""
        return cls.from_dict(upgrade_config(data))

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> StudyConfig:
        for item in overrides:
            key = item.split("=", 1)[0].strip()
            check(key not in LEGACY_DPO_KEYS,
                  f"override {item!r}: {key} belongs to dpo_train; use --set dpo_train.{item.strip()}")
        return super().with_overrides(overrides)

    @classmethod
    def preset(cls, name: str) -> StudyConfig:
        """A built-in preset from reversalkit/presets/<name>.yaml."""
        names = preset_names()
        if name not in names:
            raise ValueError(f"unknown preset {name!r}; built-in presets: {', '.join(names)}")
        text = resources.files("reversalkit").joinpath("presets", f"{name}.yaml").read_text()
        import yaml  # noqa: PLC0415

        return cls.from_dict(yaml.safe_load(text) or {})


def preset_names() -> list[str]:
    root = resources.files("reversalkit").joinpath("presets")
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))
