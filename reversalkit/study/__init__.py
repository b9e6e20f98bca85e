"""The iterative self-improvement study: config, loop, run store, evaluation, report.

    from reversalkit.study import Study, StudyConfig
    results = Study(StudyConfig.preset("tiny").replace(out_dir="runs/tiny")).run()

Modules: `config` (StudyConfig), `plan` (iterates as lineage-named nodes, derived seeds), `store`
(atomic, resumable run directory), `data` (D_t: SFT selection, DPO pairs), `rollout` (sample and
reward over problem lists), `evaluate` (metrics of one test set), `stages` (one function per
stage), `workspace` (model, engine, tasks in memory), `loop` (Study), `results`, `tables`, `report`.
"""

import importlib

_EXPORTS = {"Study": "loop", "StudyConfig": "config", "TinyModelConfig": "config", "preset_names": "config",
            "collect_results": "results", "RunStore": "store", "write_report": "report"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # Lazy: `reversalkit.study.store` or `.report` must not pull in torch and the engine.
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"reversalkit.study.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'reversalkit.study' has no attribute {name!r}")
