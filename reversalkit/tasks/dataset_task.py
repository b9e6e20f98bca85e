"""Base class for tasks backed by a `datasets` dataset (GSM8K, MATH, CSQA, MBPP).

Options shared by those tasks live in `DatasetOptions` (hub id / configs, local data files, cache
dir, k-shot settings, an optional per-split limit). A subclass declares its default hub id, its
required columns and how one row becomes a `Problem`; loading, caching per split, and the
hub-vs-local choice happen here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from reversalkit.config import Config, check, option
from reversalkit.tasks.base import Problem, PromptedTask
from reversalkit.tasks.data import load_rows


@dataclasses.dataclass
class DatasetOptions(Config):
    hub_id: str = option("", "dataset id on the hub; empty = the task's usual id")
    hub_config: Any = option(None, "hub config name, or a list of names whose rows are concatenated; "
                                   "None = the task's default")
    data_files: Any = option(None, "local files instead of the hub: a path, a list, or {split: path(s)}; "
                                   "jsonl/json/parquet/csv in the dataset's own column layout")
    cache_dir: str | None = option(None, "datasets cache directory (None = the datasets default)")
    shots: int = option(0, "k-shot exemplars in each prompt (0 = zero-shot)")
    shot_seed: int = option(0, "seed that draws the k exemplars from the train split")
    limit: int | None = option(None, "keep only the first N problems of each split (quick runs)")

    def __post_init__(self):
        check(self.shots >= 0, f"shots must be >= 0, got {self.shots}")
        check(self.limit is None or self.limit > 0,
              f"limit must be a positive count or None, got {self.limit}")


class DatasetTask(PromptedTask):
    """A PromptedTask whose problems come from `reversalkit.tasks.data.load_rows`."""

    name = "dataset"
    default_hub_id = ""
    default_hub_config: str | tuple[str, ...] | None = None
    columns: tuple[str, ...] = ()
    # Our split name -> the hub's split name (CSQA keeps its labelled test set as "validation").
    hub_splits: dict[str, str] = {}

    def __init__(self, **options: Any):
        self.options = DatasetOptions.from_dict(options)
        super().__init__(shots=self.options.shots, shot_seed=self.options.shot_seed)
        self._cache: dict[str, list[Problem]] = {}

    def rows(self, split: str) -> list[dict[str, Any]]:
        o = self.options
        configs = o.hub_config if o.hub_config is not None else self.default_hub_config
        configs = list(configs) if isinstance(configs, (list, tuple)) else [configs]
        rows: list[dict[str, Any]] = []
        for config in (configs if o.data_files is None else [None]):
            rows += load_rows(task=self.name, split=split, columns=self.columns,
                              hub_id=o.hub_id or self.default_hub_id, hub_config=config,
                              hub_split=self.hub_splits.get(split, split), data_files=o.data_files,
                              cache_dir=o.cache_dir)
            if o.limit is not None and len(rows) >= o.limit:
                break
        return rows[: o.limit] if o.limit is not None else rows

    def to_problem(self, row: dict[str, Any], split: str, index: int) -> Problem:
        raise NotImplementedError

    def load(self, split: str) -> list[Problem]:
        if split not in self._cache:
            self._cache[split] = [self.to_problem(row, split, i) for i, row in enumerate(self.rows(split))]
        return self._cache[split]
