"""Starting or resuming a run: checks before any work, the run store on rank 0, the log file.

`open_store` gives rank 0 the run store (created, checked against the config, locked) and the other
ranks of a torchrun job a read-only view of it; the checks refuse a model that cannot load or a
resume of another task before the run directory changes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reversalkit import dist
from reversalkit.study.config import StudyConfig
from reversalkit.study.store import RunLockedError, RunStore


def open_store(group: dist.Group, root: str, config: dict[str, Any], *, fresh: bool,
               ignore_keys: tuple[str, ...],
               upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> RunStore:
    """Rank 0 opens (creates, checks, locks) the run store; the other ranks then follow it. An
    error on rank 0 (another config, a locked run) is raised on every rank."""
    store, error = None, None
    if group.is_main:
        try:
            store = RunStore.open(root, config, fresh=fresh, ignore_keys=ignore_keys, upgrade=upgrade)
        except (ValueError, OSError, RunLockedError) as exc:
            error = exc
    error = group.broadcast(error)
    if error is not None:
        raise error
    return store if store is not None else RunStore.follower(root)

def m1_done(out_dir: str) -> bool:
    path = Path(out_dir) / "manifest.json"
    try:
        return "m1/train" in json.loads(path.read_text()).get("steps", {})
    except (OSError, ValueError):
        return False

def check_model_source(cfg: StudyConfig) -> None:
    """Fail before any work when M0 (or the given M1) cannot be loaded: a missing local directory,
    or a hub id the hub cannot serve (loading its tokenizer is cheap and raises the hint)."""
    spec = cfg.m1 if cfg.m1 is not None else (None if cfg.model == "tiny" else cfg.model)
    if spec is None:
        return
    key = "m1" if cfg.m1 is not None else "model"
    path = Path(spec).expanduser()
    looks_local = spec.startswith(("/", ".", "~")) or spec.count("/") > 1  # hub ids are 'org/name'
    if not path.exists() and looks_local:
        raise FileNotFoundError(f"{key}: {spec} does not exist; give a local checkpoint directory "
                                "(config.json + *.safetensors + tokenizer files) or a hub id")
    if path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{key}: {spec} holds no config.json; is it a model directory?")
    from reversalkit import models  # noqa: PLC0415

    models.load_tokenizer(spec)

def check_task_identity(store: RunStore, identity: dict[str, str]) -> None:
    """Record the task and a digest of its problems on a run's first start; refuse a resume whose
    task or problems differ (a task object can change without changing the config)."""
    old = store.meta("task_identity")
    if old is None:
        store.set_meta("task_identity", identity)
        return
    changed = [f"{k}: {old.get(k)} -> {v}" for k, v in identity.items() if old.get(k) != v]
    if changed:
        raise ValueError(f"{store.root} holds a run of another task or other problems:\n  "
                         + "\n  ".join(changed) + "\nRerun with the original task to resume it, pass "
                         "--fresh (fresh=True) to start over, or choose another --out directory.")

def file_handler(store: RunStore) -> logging.Handler:
    handler = logging.FileHandler(store.path("study.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("reversalkit")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler
