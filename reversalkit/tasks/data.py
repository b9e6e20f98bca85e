"""Loading dataset rows through `datasets`: by hub id, or from local jsonl/json/parquet/csv files.

`load_rows` returns plain dicts (one per row) after checking the expected columns. A hub load that
fails (typically: offline with no cached copy) raises `DatasetUnavailableError` whose message says
how to pass local files instead, rather than a stack of connection errors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DataFiles = str | Sequence[str] | Mapping[str, str | Sequence[str]]

_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class DatasetUnavailableError(RuntimeError):
    """A dataset could not be loaded from the hub (offline, missing, or not cached)."""


def _files_for_split(data_files: DataFiles, split: str, task: str) -> list[str]:
    if isinstance(data_files, Mapping):
        if split not in data_files:
            raise ValueError(f"{task}: data_files has no entry for split {split!r} "
                             f"(given: {', '.join(map(str, data_files))}); add {split!r}: 'path.jsonl'")
        files = data_files[split]
    else:
        files = data_files  # one file set serves every split
    files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    for f in files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"{task}: data file {f} for split {split!r} does not exist")
    return [str(f) for f in files]


def _check_local_file(path: str, split: str, task: str) -> None:
    """An empty file, or a JSON-lines file with a line that is not JSON, fails with the file and
    line before the datasets builder runs (whose errors name neither)."""
    if os.path.getsize(path) == 0:
        raise ValueError(f"{task}: data file {path} for split {split!r} is empty")
    if not path.endswith(".jsonl"):
        return
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{task}: {path} line {number} is not JSON ({exc.msg}); each line of a "
                                 ".jsonl file holds one object") from None
            if not isinstance(row, dict):
                raise ValueError(f"{task}: {path} line {number} holds a {type(row).__name__}, not an "
                                 "object with the dataset's columns")


def _builder(files: list[str], task: str) -> str:
    kinds = {_BUILDERS.get(Path(f).suffix.lower()) for f in files}
    if None in kinds or len(kinds) != 1:
        raise ValueError(f"{task}: local files must all be one of {', '.join(_BUILDERS)}; got {files}")
    return kinds.pop()


def _hint(task: str, columns: Sequence[str]) -> str:
    return (f"To use local files, pass data_files, e.g. get_task({task!r}, data_files={{'train': "
            f"'train.jsonl', 'test': 'test.jsonl'}}) (jsonl, json, parquet or csv) with the "
            f"dataset's own columns: {', '.join(columns)}.")


def load_rows(
    *,
    task: str,
    split: str,
    columns: Sequence[str],
    hub_id: str | None = None,
    hub_config: str | None = None,
    hub_split: str | None = None,
    data_files: DataFiles | None = None,
    cache_dir: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of one split as dicts. Local `data_files` win over the hub id when both are given.

    `hub_split` is the split's name on the hub when it differs from ours (CSQA test ->
    validation). `columns` are required to be present; others are kept.
    """
    import datasets

    if data_files is not None:
        files = _files_for_split(data_files, split, task)
        for f in files:
            _check_local_file(f, split, task)
        try:
            ds = datasets.load_dataset(_builder(files, task), data_files={"rows": files}, split="rows",
                                       cache_dir=cache_dir)
        except Exception as exc:  # noqa: BLE001 - one line naming the files instead of a builder traceback
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ValueError(f"{task}: cannot read {', '.join(files)} for split {split!r}: {first}") from None
    elif hub_id:
        try:
            ds = datasets.load_dataset(hub_id, hub_config, split=hub_split or split, cache_dir=cache_dir)
        except Exception as exc:  # noqa: BLE001 - every hub failure gets the same actionable advice
            offline = any(os.environ.get(v, "0") not in ("0", "", "false") for v in
                          ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise DatasetUnavailableError(
                f"{task}: could not load {hub_id!r}"
                + (f" (config {hub_config!r})" if hub_config else "")
                + f" split {hub_split or split!r}"
                + (" - offline mode is on (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE) and no cached copy "
                   "was found" if offline else "")
                + f": {type(exc).__name__}: {first}. " + _hint(task, columns)
            ) from None
    else:
        raise ValueError(f"{task}: give either hub_id or data_files. " + _hint(task, columns))
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"{task}: split {split!r} lacks column(s) {', '.join(missing)}; it has "
                         f"{', '.join(ds.column_names)}. Expected the dataset's own layout: "
                         f"{', '.join(columns)}.")
    return [dict(row) for row in ds]
