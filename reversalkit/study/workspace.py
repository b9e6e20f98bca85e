"""What a study holds in memory: tasks and problem sets, one model, one engine, the SBERT model.

A study keeps a single trainable model and a single paged engine. `model_at(node)` puts a node's
weights into the model (from its safetensors checkpoint unless they are already there), and
`engine_for(node)` refreshes the engine with `Engine.load_weights` instead of rebuilding it, so
switching iterates costs one weight copy. Checkpoints are written with `save_node` through the
run store (atomic directory rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import safetensors.torch

from reversalkit import models
from reversalkit.dist import SINGLE, Group
from reversalkit.study.config import StudyConfig
from reversalkit.study.plan import ROOT, derive_seed, node_dir
from reversalkit.study.results import ID_SPLIT, ood_label
from reversalkit.study.stages import build_base_model, gold_completions, resolve_device
from reversalkit.study.store import RunStore
from reversalkit.tasks import get_task

log = logging.getLogger("reversalkit.study")


def _cap(problems: list[Any], n: int | None) -> list[Any]:
    return list(problems) if n is None else list(problems)[:n]


def load_eval_sets(cfg: StudyConfig, task: Any, ood_tasks: dict[str, Any] | None = None
                   ) -> dict[str, tuple[Any, list[Any]]]:
    """Split label -> (task that formats and checks it, problems): the ID test set and each OOD set."""
    ood_tasks = ood_tasks or {}
    sets = {ID_SPLIT: (task, _cap(task.load(cfg.id_split), cfg.test_size))}
    for spec in cfg.ood_tasks:
        name, _, split = spec.rpartition(":")
        if not name:
            ood_task = task
        elif name in ood_tasks:
            ood_task = ood_tasks[name]
        else:
            ood_task = get_task(name, **dict(cfg.ood_task_options.get(name, {}) or {}))
        sets[ood_label(spec)] = (ood_task, _cap(ood_task.load(split), cfg.ood_size))
    return sets


class Workspace:
    """The in-memory side of a study (see module doc)."""

    def __init__(self, cfg: StudyConfig, store: RunStore, *, task: Any = None,
                 ood_tasks: dict[str, Any] | None = None, group: Group = SINGLE):
        self.cfg = cfg
        self.store = store
        self.group = group
        self.device = group.device if group.distributed else resolve_device(cfg.device)
        self.task = get_task(task) if task is not None else get_task(cfg.task, **dict(cfg.task_options))
        self.train = _cap(self.task.load("train"), cfg.train_size)
        self.train_by_id = {str(p.id): p for p in self.train}
        self.eval_sets = load_eval_sets(cfg, self.task, ood_tasks)
        self.model: Any = None
        self.tok: Any = None
        self.model_node: str | None = None  # whose weights the model holds; None while they change
        self.engine: Any = None
        self.engine_node: str | None = None
        self._sbert: Any = None
        sizes = ", ".join(f"{k} {len(v[1])}" for k, v in self.eval_sets.items())
        log.info("task %s: train %d, %s; device %s", getattr(self.task, "name", "?"), len(self.train),
                 sizes, self.device)

    def problem_digest(self) -> str:
        """sha256 of the ids, prompts and answers of the train problems and every test set."""
        h = hashlib.sha256()
        sets = [("train", self.train)] + [(k, ps) for k, (_, ps) in self.eval_sets.items()]
        for label, problems in sets:
            for p in problems:
                h.update(json.dumps([label, str(p.id), p.prompt, str(p.answer)]).encode())
        return h.hexdigest()[:16]

    def sample_problems(self, iteration: int) -> list[Any]:
        """The train problems the iterate of `iteration` samples for the next round (`sample_draw`).

        The draw depends on the iteration only, not on the method, so every method's round t sees
        the same problems and iterates shared between methods are sampled once.
        """
        cfg = self.cfg
        if cfg.sample_draw == "fixed" or cfg.sample_size is None or cfg.sample_size >= len(self.train):
            return _cap(self.train, cfg.sample_size)
        order = list(range(len(self.train)))
        random.Random(derive_seed(cfg.seed, "sample_draw")).shuffle(order)
        size = cfg.sample_size
        blocks = max(1, len(order) // size)  # whole blocks; a short tail is never drawn
        start = ((iteration - 1) % blocks) * size
        return [self.train[i] for i in sorted(order[start:start + size])]

    # ---- models --------------------------------------------------------------------------
    def vocabulary_texts(self) -> list[str]:
        """Texts the tiny model's word tokenizer is built from: every prompt and gold solution."""
        texts = []
        for p in self.train:
            texts.append(self.task.format_prompt(p))
            texts += gold_completions(p, True)
        for task, problems in self.eval_sets.values():
            texts += [task.format_prompt(p) for p in problems]
        return texts

    def given_m1(self) -> tuple[Any, Any]:
        """The user's own M1 (`cfg.m1`) as the current model, to be stored as node m1."""
        path = self.cfg.m1
        self.model = models.load_model(path, device=self.device, dtype=self._train_dtype(),
                                       progress=self.cfg.progress)
        self.tok = models.load_tokenizer(path)
        self.model_node = None
        return self.model, self.tok

    def base_model(self) -> tuple[Any, Any]:
        """M0 as the current model (weights about to be trained into M1)."""
        texts = self.vocabulary_texts() if self.cfg.model == "tiny" else []
        self.model, self.tok = build_base_model(self.cfg, self.task, texts, self.device)
        self.model_node = None
        return self.model, self.tok

    def _ensure_model(self) -> None:
        if self.model is None:
            path = self.store.path(f"{node_dir(ROOT)}/model")
            self.model = models.load_model(path, device=self.device, dtype=self._train_dtype(),
                                           progress=self.cfg.progress)
            self.tok = models.load_tokenizer(path)
            self.model_node = ROOT

    def _train_dtype(self) -> str:
        # The model the study trains keeps fp32 master weights on CPU; on CUDA the config decides
        # (bf16 by default) and TrainConfig.autocast_bf16 handles mixed precision.
        return "float32" if self.device == "cpu" else self.cfg.dtype

    def model_at(self, name: str) -> tuple[Any, Any]:
        """The model holding node `name`'s weights, and the tokenizer."""
        self._ensure_model()
        if self.model_node != name:
            self._load_weights(self.store.path(f"{node_dir(name)}/model"))
            self.model_node = name
        return self.model, self.tok

    def _load_weights(self, path: Path) -> None:
        state: dict[str, Any] = {}
        for f in sorted(path.glob("*.safetensors")):
            state.update(safetensors.torch.load_file(str(f), device=str(self.device)))
        if not state:
            raise FileNotFoundError(f"no *.safetensors weights in {path}")
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        tied = {"lm_head.weight"} if getattr(self.model.config, "tie_word_embeddings", False) else set()
        if unexpected or set(missing) - tied:
            raise RuntimeError(f"checkpoint {path} does not match the model: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")

    def mark_training(self) -> None:
        """The model's weights are about to change: they belong to no stored node until saved. On a
        GPU the engine's KV cache (most of the free memory) is released for the training step."""
        self.model_node = None
        if self.engine is not None and str(self.device).startswith("cuda"):
            self.engine.release_memory()

    def save_node(self, name: str) -> None:
        """Checkpoint the current weights as node `name` (atomic directory write, by rank 0 alone:
        every rank holds the same weights)."""
        if self.group.is_main:
            with self.store.atomic_dir(f"{node_dir(name)}/model") as tmp:
                models.save_model(self.model, self.tok, tmp, progress=self.cfg.progress)
        self.model_node = name

    def engine_for(self, name: str) -> Any:
        """The paged engine holding node `name`'s weights."""
        from reversalkit.engine import Engine  # noqa: PLC0415

        model, tok = self.model_at(name)
        if self.engine is None:
            dtype = None if self.cfg.dtype == "auto" else self.cfg.dtype
            self.engine = Engine(model, tok, device=self.device, dtype=dtype, block_size=self.cfg.block_size,
                                 kv_cache_memory=self.cfg.kv_cache_memory)
        elif self.engine_node != name:
            self.engine.load_weights(model.state_dict())
        self.engine_node = name
        return self.engine

    def sbert(self) -> Any:
        """The sentence-embedding model for SBERT diversity (None when disabled)."""
        if self.cfg.sbert_model.lower() == "none":
            return None
        if self._sbert is None:
            from reversalkit.metrics import load_sentence_model  # noqa: PLC0415

            name = None if self.cfg.sbert_model == "default" else self.cfg.sbert_model
            self._sbert = load_sentence_model(name, device=self.device)
        return self._sbert

    def close(self) -> None:
        self.engine = None
        self.model = None
