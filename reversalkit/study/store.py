"""The run directory: resolved config, manifest of finished steps, and every artifact of a study.

One `RunStore` owns all writes to a run directory, so that a later multi-process run can give the
store to rank 0 alone. Every write is atomic (a temporary file or directory in the same folder,
then `os.replace`), and a step counts as finished only once the manifest, itself written
atomically, lists it. A run killed at any instant therefore leaves either the old or the new version
of each file, and a rerun redoes exactly the steps that the manifest does not list.

    store = RunStore.open("runs/tiny", config_dict, fresh=False)
    if not store.is_done("m1/train"):
        ...; store.write_json("nodes/m1/train.json", info); store.mark_done("m1/train")

Layout: `config.yaml`, `manifest.json`, `study.log`, `nodes/<node>/...` (one folder per model
iterate: checkpoint, samples, metrics), `report/` (report.md, index.html, PNGs).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

MANIFEST = "manifest.json"
CONFIG = "config.yaml"
LOCK = ".lock"
FORMAT_VERSION = 1


def config_digest(config: dict[str, Any]) -> str:
    """Stable hash of a resolved config dict (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable `key: old -> new` lines for every leaf that differs."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]


class RunLockedError(RuntimeError):
    """Another process holds the run directory."""


class RunStore:
    """Atomic, resumable storage for one study run. Use `RunStore.open` to create or resume."""

    def __init__(self, root: Path, manifest: dict[str, Any],
                 on_write: Callable[[str], None] | None = None):
        self.root = Path(root)
        self._manifest = manifest
        self._lock_fh: Any = None
        # Called with the relative path after each artifact lands; the study forwards it to its
        # event hook (tests use it to kill a run between an artifact and its manifest entry).
        self.on_write = on_write

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path, config: dict[str, Any], *, fresh: bool = False,
             ignore_keys: Iterable[str] = (),
             upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> RunStore:
        """Create `root`, or resume it when it holds a run of the same config.

        `ignore_keys` are top-level config keys that may change between a run and its resume
        (e.g. the output directory itself). A changed config raises ValueError listing what
        changed, unless `fresh=True`, which deletes the old run first. `upgrade` maps a stored config
        of an earlier version to today's layout; a run whose upgraded config matches resumes, and its
        stored config is rewritten in the new layout.
        """
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise ValueError(f"run directory {root} is a file; choose another --out directory")
        ignore = set(ignore_keys)
        relevant = {k: v for k, v in config.items() if k not in ignore}
        digest = config_digest(relevant)
        mpath = root / MANIFEST
        if root.exists() and any(root.iterdir()) and not mpath.exists():
            raise ValueError(
                f"{root} exists, is not empty and holds no {MANIFEST}, so it is not a reversalkit run; "
                "choose another --out directory or empty this one")
        if fresh and mpath.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        store = cls(root, {})
        store._acquire_lock()
        if mpath.exists():
            manifest = json.loads(mpath.read_text())
            stored = None
            if manifest.get("config_digest") != digest:
                stored = yaml.safe_load((root / CONFIG).read_text()) if (root / CONFIG).exists() else {}
            if stored and upgrade is not None:
                # a run written by an earlier version: the same settings in an older layout
                upgraded = upgrade(stored)
                if config_digest({k: v for k, v in upgraded.items() if k not in ignore}) == digest:
                    manifest["config_digest"] = digest
                    store._manifest = manifest
                    store.write_text(CONFIG, yaml.safe_dump(config, sort_keys=False))
                    store._save_manifest()
            if manifest.get("config_digest") != digest:
                old = {k: v for k, v in (stored or {}).items() if k not in ignore}
                changes = "\n  ".join(config_diff(old, relevant)) or "(format change)"
                store.close()
                raise ValueError(
                    f"{root} holds a run with a different config:\n  {changes}\n"
                    "Rerun with the original config to resume it, pass --fresh (fresh=True) to delete "
                    "it and start over, or choose another --out directory.")
            store._manifest = manifest
        else:
            store._manifest = {"format": FORMAT_VERSION, "config_digest": digest,
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "steps": {}}
            store.write_text(CONFIG, yaml.safe_dump(config, sort_keys=False))
            store._save_manifest()
        return store

    @classmethod
    def read_only(cls, root: str | Path) -> RunStore:
        """Open an existing run for reading (report, eval); takes no lock, allows no steps."""
        root = Path(root)
        mpath = root / MANIFEST
        if not mpath.exists():
            raise FileNotFoundError(f"{root} is not a reversalkit run directory (no {MANIFEST})")
        return cls(root, json.loads(mpath.read_text()))

    @classmethod
    def follower(cls, root: str | Path) -> RunStore:
        """The view of a run that ranks other than 0 hold: it reads the run directory, while its
        writes, checkpoints and manifest updates stay in memory (rank 0 owns the directory)."""
        return _FollowerStore.read_only(root)

    def _acquire_lock(self) -> None:
        fh = open(self.root / LOCK, "w")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise RunLockedError(f"another process is running a study in {self.root}; wait for it or "
                               "choose another --out directory") from None
        self._lock_fh = fh

    def close(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- steps ---------------------------------------------------------------------------
    def is_done(self, step: str) -> bool:
        return step in self._manifest["steps"]

    def step_info(self, step: str) -> dict[str, Any] | None:
        return self._manifest["steps"].get(step)

    def steps(self) -> dict[str, Any]:
        return dict(self._manifest["steps"])

    def mark_done(self, step: str, **info: Any) -> None:
        self._manifest["steps"][step] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        self._save_manifest()

    def set_meta(self, key: str, value: Any) -> None:
        self._manifest.setdefault("meta", {})[key] = value
        self._save_manifest()

    def meta(self, key: str, default: Any = None) -> Any:
        return self._manifest.get("meta", {}).get(key, default)

    def _save_manifest(self) -> None:
        self._write_bytes(MANIFEST, json.dumps(self._manifest, indent=1).encode(), notify=False)

    # ---- atomic writes -------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        return self.root / rel

    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def _write_bytes(self, rel: str, data: bytes, notify: bool = True) -> Path:
        dest = self.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if notify and self.on_write is not None:
            self.on_write(rel)
        return dest

    def write_bytes(self, rel: str, data: bytes) -> Path:
        return self._write_bytes(rel, data)

    def write_text(self, rel: str, text: str) -> Path:
        return self._write_bytes(rel, text.encode())

    def write_json(self, rel: str, obj: Any) -> Path:
        return self._write_bytes(rel, json.dumps(obj, indent=1, sort_keys=False).encode())

    def write_jsonl(self, rel: str, rows: Iterable[dict[str, Any]]) -> Path:
        """JSON lines, gzip-compressed when `rel` ends in .gz (mtime 0, so bytes are reproducible)."""
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        if rel.endswith(".gz"):
            data = gzip.compress(data, mtime=0)
        return self._write_bytes(rel, data)

    @contextlib.contextmanager
    def atomic_dir(self, rel: str) -> Iterator[Path]:
        """Yield a temporary directory; on success it replaces `rel` in one rename."""
        dest = self.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
        try:
            yield tmp
            if dest.exists():
                # A directory cannot be replaced atomically while non-empty: move the old one
                # aside first, so at any instant one complete version exists under some name.
                old = dest.with_name(f".{dest.name}.old")
                if old.exists():
                    shutil.rmtree(old)
                os.replace(dest, old)
                os.replace(tmp, dest)
                shutil.rmtree(old)
            else:
                os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if self.on_write is not None:
            self.on_write(rel)

    # ---- reads ---------------------------------------------------------------------------
    def read_json(self, rel: str) -> Any:
        return json.loads((self.root / rel).read_text())

    def read_jsonl(self, rel: str) -> list[dict[str, Any]]:
        raw = (self.root / rel).read_bytes()
        if rel.endswith(".gz"):
            raw = gzip.decompress(raw)
        return [json.loads(line) for line in raw.decode().splitlines() if line]

    def config(self) -> dict[str, Any]:
        return yaml.safe_load((self.root / CONFIG).read_text())


class _FollowerStore(RunStore):
    """`RunStore.follower`: reads go to disk, writes are dropped (see there)."""

    def _write_bytes(self, rel: str, data: bytes, notify: bool = True) -> Path:
        return self.root / rel

    @contextlib.contextmanager
    def atomic_dir(self, rel: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="reversalkit-follower-") as tmp:
            yield Path(tmp)
