"""The sampler facade: `Engine(model, tokenizer).generate(prompts, SamplingParams(...))`.

A generate() call first computes the prompts' longest common prefix once (the few-shot prefix)
and pins its KV blocks, then runs steps until every sample is done. A step is schedule (scheduler.py) -> run
and sample (runner.py) -> postprocess (see `_step`); the call's own state (sampler, stop strings,
finished completions) lives in a `_Call`. Weights are copied out of the transformers model;
`load_weights` refreshes them after a training round without touching disk.

    engine = Engine(hf_model, tokenizer)
    outs = engine.generate(prompts, SamplingParams(n=8, temperature=0.75, top_p=0.95, max_new_tokens=128))
    outs[i][j].text, outs[i][j].token_ids, outs[i][j].finish_reason
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from collections.abc import Mapping
from collections.abc import Sequence as Seq

import torch

from reversalkit.device import resolve_dtype
from reversalkit.engine.block_manager import BlockManager
from reversalkit.engine.host import keep_freed_memory
from reversalkit.engine.model import LlamaFamilyModel
from reversalkit.engine.runner import ModelRunner, StepOutput
from reversalkit.engine.sampling import Sampler, StopChecker, request_key
from reversalkit.engine.scheduler import DecodeStep, PrefillStep, Scheduler, SchedulerConfig
from reversalkit.engine.sequence import Completion, SamplingParams, Sequence
from reversalkit.tokenization import TokenizerAdapter

_CPU_KV_CAP = 2 << 30  # default paged-cache bytes on CPU at most
_KV_HEADROOM = 1.1  # the default CPU cache holds max_num_seqs full-length sequences and 10% more
_CPU_ROWS = (256, 1024)  # default max_num_seqs on CPU: at least, at most (see cpu_rows)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def _engine_dtype(dtype, device, model) -> torch.dtype | None:
    """None keeps the model's dtype; anything else resolves for the device the engine runs on."""
    if dtype is None:
        return None
    if device is None:
        device = "cpu" if isinstance(model, (str, os.PathLike)) else next(model.parameters()).device
    return resolve_dtype(dtype, device)


def _load_hf(path, dtype):
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    if not os.path.isdir(path):
        raise FileNotFoundError(f"model checkpoint directory {path} does not exist")
    # dtype None: the checkpoint's stored dtype (what transformers calls "auto")
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto")


def cpu_rows(max_model_len: int, block_size: int, bytes_per_block: int) -> int:
    """Default decode rows on the CPU: as many full-length sequences as the default KV budget holds,
    within _CPU_ROWS. A small model's step costs mostly per-step overhead, so wider steps are
    cheaper per token (tiny preset, 3200 samples: 5.6 s at 1024 rows vs 6.2 s at 256, medians of
    6); a large model keeps 256 rows and relies on preemption as before."""
    full = -(-max_model_len // block_size) * bytes_per_block
    lo, hi = _CPU_ROWS
    return max(lo, min(hi, int(_CPU_KV_CAP / (_KV_HEADROOM * full))))


def _eos_ids(hf_model) -> list[int]:
    """EOS ids as transformers' generate uses them: generation config first, then model config."""
    for src in (getattr(hf_model, "generation_config", None), hf_model.config):
        eos = getattr(src, "eos_token_id", None) if src is not None else None
        if eos is not None:
            return [eos] if isinstance(eos, int) else [int(e) for e in eos]
    return []


@dataclasses.dataclass
class _Call:
    """The state of one generate() call: how to sample and stop, the finished completions keyed by
    (prompt index, sample index), and the tokens sampled so far."""

    params: SamplingParams
    sampler: Sampler
    stops: StopChecker
    results: dict[tuple[int, int], Completion] = dataclasses.field(default_factory=dict)
    tokens: int = 0

    def finish(self, seq: Sequence, tokenizer: TokenizerAdapter) -> None:
        gen = seq.generated
        text = tokenizer.decode(gen)
        if seq.finish_reason == "stop" and self.stops.stop:
            text = self.stops.truncate(text)
        lp = seq.cumulative_logprob if seq.token_logprobs is not None else None
        self.results[(seq.request_id, seq.sample_index)] = Completion(text, gen, lp, seq.finish_reason,
                                                                     seq.token_logprobs)


class Engine:
    """Paged-KV batched sampler for Llama-family causal LMs.

    model: a transformers Llama/Mistral/Qwen2 causal LM or a local checkpoint directory.
    tokenizer: a transformers tokenizer or a `tokenizers.Tokenizer` (None: token-id prompts only,
        empty texts). Loaded from the checkpoint directory when model is a path that holds one.
    device: defaults to the model's. dtype: None keeps the model's (a checkpoint directory's stored
        dtype), else a torch.dtype or a name for `reversalkit.device.resolve_dtype` ('auto': bf16
        on a CUDA device that supports it, fp32 elsewhere). block_size: tokens per KV block.
    kv_cache_memory: bytes for the paged KV cache, or a float in (0, 1] for that fraction of the
        free accelerator memory; default: room for max_num_seqs full-length sequences on CPU
        (at most 2 GiB), 90% of free memory on CUDA. On CPU the decode rows (attention.RowKV)
        take about as much again.
    max_num_seqs, max_num_batched_tokens: scheduler limits (defaults 512 / 16384 on CUDA; on CPU
        4096 tokens and as many rows, from 256 up to 1024, as full-length sequences fit in 2 GiB
        of KV, see `cpu_rows`). decode_backend: "auto", "rows", "triton" or "reference" (see runner.py).
    cuda_graphs: replay the decode step as CUDA graphs (CUDA only; falls back to eager on failure).
    tune_malloc: keep freed heap memory for reuse (a process-wide glibc setting, see host.py), off
        unless asked: on CPU it removes page faults from every decode step, so a program that owns
        its process (the `reversalkit` CLI, the benchmarks) turns it on.
    """

    def __init__(self, model, tokenizer=None, *, device=None, dtype=None, block_size: int = 16,
                 kv_cache_memory: int | float | None = None, max_num_seqs: int | None = None,
                 max_num_batched_tokens: int | None = None, decode_backend: str = "auto",
                 cuda_graphs: bool = True, tune_malloc: bool = False):
        dtype = _engine_dtype(dtype, device, model)
        if isinstance(model, (str, os.PathLike)):
            path = str(model)
            model = _load_hf(path, dtype)
            if tokenizer is None and any(os.path.exists(os.path.join(path, f)) for f in _TOKENIZER_FILES):
                tokenizer = path
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        self.tokenizer = TokenizerAdapter(tokenizer)
        self.model = LlamaFamilyModel.from_hf(model, device=device, dtype=dtype)
        self.device = self.model.device
        self.eos_ids = _eos_ids(model)
        self._eos = torch.tensor(self.eos_ids, dtype=torch.int64, device=self.device)
        cuda = self.device.type == "cuda"
        spec = self.model.spec
        self.max_model_len = spec.max_position
        self.block_size = block_size
        bytes_per_block = 2 * spec.num_layers * block_size * spec.num_kv_heads * spec.head_dim * \
            self.model.dtype.itemsize
        if max_num_seqs is None:
            max_num_seqs = 512 if cuda else cpu_rows(self.max_model_len, block_size, bytes_per_block)
        sched = SchedulerConfig(max_num_seqs=max_num_seqs,
                                max_num_batched_tokens=max_num_batched_tokens or (16384 if cuda else 4096))
        budget = self._kv_budget(kv_cache_memory, sched.max_num_seqs, bytes_per_block)
        self.num_blocks = int(budget // bytes_per_block) - 1  # the runner adds a scratch block
        if self.num_blocks < 1:
            raise ValueError(
                f"kv_cache_memory={kv_cache_memory!r} holds no KV block of {bytes_per_block} bytes")
        self.block_manager = BlockManager(self.num_blocks, block_size)
        self.scheduler = Scheduler(self.block_manager, sched)
        self._runner_args = dict(num_blocks=self.num_blocks, block_size=block_size,
                                 max_rows=sched.max_num_seqs, decode_backend=decode_backend,
                                 cuda_graphs=cuda_graphs)
        self.runner: ModelRunner | None = ModelRunner(self.model, **self._runner_args)
        if tune_malloc:
            keep_freed_memory()
        self.stats: dict[str, float] = {}

    def _kv_budget(self, kv_cache_memory, max_num_seqs: int, bytes_per_block: int) -> int:
        if isinstance(kv_cache_memory, float):
            if not 0 < kv_cache_memory <= 1:
                raise ValueError(f"a float kv_cache_memory is a fraction in (0, 1], got {kv_cache_memory}")
            if self.device.type != "cuda":
                raise ValueError("a fractional kv_cache_memory needs a CUDA device; give bytes on CPU")
            return int(torch.cuda.mem_get_info(self.device)[0] * kv_cache_memory)
        if kv_cache_memory is not None:
            if kv_cache_memory <= 0:
                raise ValueError(f"kv_cache_memory must be positive, got {kv_cache_memory}")
            return int(kv_cache_memory)
        if self.device.type == "cuda":
            return int(torch.cuda.mem_get_info(self.device)[0] * 0.9)
        blocks_per_seq = -(-self.max_model_len // self.block_size)
        # room for every row at full context, capped: past the cap, preemption takes over
        return min(int(_KV_HEADROOM * max_num_seqs * blocks_per_seq * bytes_per_block), _CPU_KV_CAP)

    # ---- public API ----
    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Refresh the weights from a transformers-style state dict; cached prefix KV is dropped."""
        self.model.load_weights(state_dict)
        self.block_manager.reset()
        if self.runner is not None:
            self.runner.reset_graphs()

    def release_memory(self) -> None:
        """Free the KV cache, the decode rows and any CUDA graphs until the next generate() makes
        them again (same number of blocks): room to train the model in the same process between
        sampling rounds. Cached prefixes are dropped; the weights stay."""
        self.runner = None
        self.block_manager.reset()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _ensure_runner(self) -> ModelRunner:
        if self.runner is None:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()  # return what training cached before the cache is made again
            self.runner = ModelRunner(self.model, **self._runner_args)
        return self.runner

    def generate(self, prompts: Seq[str] | Seq[Seq[int]], params: SamplingParams | None = None,
                 progress: bool = True) -> list[list[Completion]]:
        """One list of params.n completions per prompt, in prompt order."""
        params = params if params is not None else SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
        ids = self._prompt_ids(prompts)
        self._check_fits(ids, params)
        self._ensure_runner()
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        call = _Call(params, Sampler(params), StopChecker(params.stop, self.tokenizer.decode_raw,
                                                          self.model.spec.vocab_size, self.device))
        prefix_table = self._pin_prefix(ids, params)
        sched = self.scheduler
        for i, p in enumerate(ids):
            limit = min(len(p) + params.max_new_tokens, self.max_model_len)
            sched.add(Sequence(seq_id=sched.new_id(), request_id=i, sample_index=0, token_ids=list(p),
                               num_prompt_tokens=len(p), max_tokens=limit, rng_key=request_key(seed, p),
                               num_children=params.n, token_logprobs=[] if params.logprobs else None))
        try:
            self._run(call, len(ids) * params.n, progress)
        finally:
            self._abort_leftovers()
            if prefix_table:
                self.block_manager.free(prefix_table)
        return [[call.results[(i, j)] for j in range(params.n)] for i in range(len(ids))]

    # ---- input handling ----
    def _prompt_ids(self, prompts) -> list[list[int]]:
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Seq):
            raise TypeError("prompts must be a list of strings or of token-id lists, got "
                            f"{type(prompts).__name__}; wrap a single prompt in a list")
        if len(prompts) == 0:
            raise ValueError("prompts is empty: give at least one prompt")
        V = self.model.spec.vocab_size
        texts = [i for i, p in enumerate(prompts) if isinstance(p, str)]
        encoded = dict(zip(texts, self.tokenizer.encode_many([prompts[i] for i in texts]))) if texts else {}
        out = []
        for i, p in enumerate(prompts):
            ids = encoded[i] if isinstance(p, str) else [int(t) for t in p]
            if not ids:
                raise ValueError(f"prompt {i} has no tokens")
            if min(ids) < 0 or max(ids) >= V:
                raise ValueError(f"prompt {i} holds token ids outside [0, {V})")
            if len(ids) >= self.max_model_len:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens but the model's context is {self.max_model_len}, "
                    "leaving no room to generate; shorten the prompt")
            out.append(ids)
        return out

    def _check_fits(self, ids: list[list[int]], params: SamplingParams) -> None:
        cfg = self.scheduler.cfg
        if params.n > cfg.max_num_seqs:
            raise ValueError(f"n={params.n} exceeds max_num_seqs={cfg.max_num_seqs}: all samples of a prompt "
                             "start together; raise max_num_seqs")
        longest = max(min(len(p) + params.max_new_tokens, self.max_model_len) for p in ids)
        need = -(-longest // self.block_size) + params.n
        if need > self.num_blocks:
            raise ValueError(
                f"the KV cache holds {self.num_blocks} blocks of {self.block_size} tokens, but one prompt "
                f"with its {params.n} samples needs {need}; raise kv_cache_memory")

    def _pin_prefix(self, ids: list[list[int]], params: SamplingParams) -> list[int]:
        """Compute the prompts' common prefix (whole blocks, short of every prompt's last token)
        once and keep its blocks referenced for the call."""
        first = ids[0]
        lcp = min(len(p) for p in ids) - 1
        for p in ids[1:]:
            k = 0
            while k < lcp and p[k] == first[k]:
                k += 1
            lcp = k
        prefix_len = lcp // self.block_size * self.block_size
        if len(ids) * params.n < 2 or prefix_len == 0:
            self.runner.begin([], 0, self._max_total(ids, params), max(map(len, ids)))
            return []
        pre = Sequence(seq_id=-1, request_id=-1, sample_index=0, token_ids=first[:prefix_len],
                       num_prompt_tokens=prefix_len, max_tokens=prefix_len, rng_key=0)
        pre.block_table, pre.num_cached_tokens = self.block_manager.allocate(pre.token_ids)
        self.runner.prefill([pre])
        self.scheduler.seal(pre, pre.num_cached_tokens // self.block_size, prefix_len // self.block_size)
        self.runner.begin(pre.block_table, prefix_len, self._max_total(ids, params), max(map(len, ids)))
        return pre.block_table

    def _max_total(self, ids, params) -> int:
        return min(max(len(p) for p in ids) + params.max_new_tokens, self.max_model_len)

    # ---- the loop ----
    def _run(self, call: _Call, total: int, progress: bool) -> None:
        bar = None
        if progress:
            from tqdm.auto import tqdm  # noqa: PLC0415

            bar = tqdm(total=total, desc="sampling", unit="seq", dynamic_ncols=True)
        t0 = last = time.perf_counter()
        while self.scheduler.has_work():
            finished = self._step(call)
            if bar is not None:
                bar.update(finished)
                now = time.perf_counter()
                if now - last > 0.5:
                    bar.set_postfix_str(f"{call.tokens / (now - t0):,.0f} tok/s")
                    last = now
        elapsed = time.perf_counter() - t0
        self.stats = {"tokens": call.tokens, "seconds": elapsed,
                      "tokens_per_s": call.tokens / max(elapsed, 1e-9),
                      "preemptions": self.scheduler.num_preemptions}
        if bar is not None:
            bar.set_postfix_str(f"{self.stats['tokens_per_s']:,.0f} tok/s")
            bar.close()

    def _step(self, call: _Call) -> int:
        """schedule -> run -> postprocess; returns the number of samples that finished."""
        step = self.scheduler.schedule(self.runner.rows_starting_block)
        out = self.runner.run(step, call.sampler)
        return self._postprocess(call, step, out)

    def _postprocess(self, call: _Call, step: PrefillStep | DecodeStep, out: StepOutput) -> int:
        """Find the samples that finished (length, EOS, stop string), hand the tokens to the
        scheduler, and turn finished samples into completions."""
        seqs = step.seqs
        finished = dict.fromkeys(out.at_limit, "length")
        if self.eos_ids:
            eos = torch.isin(out.tokens, self._eos).nonzero().flatten().tolist()
            finished.update(dict.fromkeys(eos, "stop"))
        for i in call.stops.candidates(out.tokens):
            s = seqs[i]
            if call.stops.hit(s.token_ids[s.num_prompt_tokens:] + [out.token_list[i]]):
                finished[i] = "stop"
        done, moves = self.scheduler.postprocess(step.first_row, out.token_list, out.logprobs, finished,
                                                 out.seal)
        self.runner.apply_moves(moves)
        call.tokens += len(out.token_list)
        for seq in done:
            call.finish(seq, self.tokenizer)
        return len(done)

    def _abort_leftovers(self) -> None:
        """After an error: release every block so the engine stays usable."""
        sched = self.scheduler
        for seq in list(sched.running) + list(sched.waiting):
            if seq.block_table:
                self.block_manager.free(seq.block_table)
                seq.block_table = []
        sched.running.clear()
        sched.waiting.clear()
