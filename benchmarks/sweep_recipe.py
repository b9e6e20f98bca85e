"""How the tiny preset's round recipe is chosen: candidate recipes scored on the dev split only.

    python -m benchmarks.sweep_recipe --out runs/sweep [--seeds 0 1] [--variants base fresh ...]
    python -m benchmarks.sweep_recipe --out runs/sweep --m1 runs/m1/nodes/m1/model   # reuse an M1

The table in benchmarks/RESULTS.md reused the M1 of seed 0 trained as the study trains it
(`reversalkit study --preset tiny --set "seeds=[]" --set iterations=1 --set num_threads=1 --out
runs/m1`) and ran with `--threads 1`.

Each seed trains (or reuses) one M1 with the tiny preset, then every variant runs its rounds from
that same M1 as a full study (`Study`, resumable) whose in-distribution evaluation is the
synthetic task's `dev` split (`id_split=dev`), greedy only, with no OOD set: the test and OOD
sets never see a candidate. A variant is a list of `key=value` overrides of the preset.

The criterion is fixed before the sweep runs: for each method, the gain of the best iterate's dev
pass@1 over M1's (the paper's "progress"), averaged over seeds; a variant must also not collapse
(its last iterate no more than 0.05 below M1 on dev for every method). Output: one row per
(variant, method) with dev pass@1 by iteration, train coverage by iteration and, for DPO, the mean
chosen reward of each round's last steps; written to stdout and, as markdown, to `--table`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The dev-only evaluation every run of the sweep uses (greedy pass@1 on 500 dev problems).
DEV_EVAL = ["id_split=dev", "task_options.dev_size=500", "ood_tasks=[]", "eval_samples=0", "m1_is_samples=0",
            "sbert_model=none", "bootstrap=0", "progress=false"]

# Candidate levers (see issue "progress, then reversal"): which problems a round samples, the
# round learning rates, an NLL term for DPO, problem-balanced D_t.
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "fresh": ["sample_draw=fresh"],
    "fresh_lr1e-4": ["sample_draw=fresh", "sft_train.lr=1e-4", "dpo_train.lr=2e-5"],
    "fresh_lr3e-5": ["sample_draw=fresh", "sft_train.lr=3e-5", "dpo_train.lr=1e-5"],
    "fresh_nll": ["sample_draw=fresh", "dpo_train.nll_weight=1.0"],
    "fresh_lr1e-4_nll": ["sample_draw=fresh", "sft_train.lr=1e-4", "dpo_train.lr=2e-5",
                         "dpo_train.nll_weight=1.0"],
    "fresh_lr1e-4_cap2": ["sample_draw=fresh", "sft_train.lr=1e-4", "dpo_train.lr=2e-5",
                          "sft_max_per_problem=2", "pairs_per_problem=2"],
    "fresh800_lr1e-4": ["sample_draw=fresh", "sample_size=800", "sft_train.lr=1e-4", "dpo_train.lr=2e-5"],
    "all_2ep_cos": ["sample_size=null", "iterations=3", "methods=[sft, gold]", "sft_train.epochs=2",
                    "sft_train.schedule=cosine", "sft_train.warmup_steps=10"],
    "fresh400_3ep_cos": ["sample_draw=fresh", "methods=[sft, dpo, gold]", "sft_train.epochs=3",
                         "sft_train.schedule=cosine", "dpo_train.epochs=3", "dpo_train.schedule=cosine",
                         "dpo_train.nll_weight=1.0"],
    "fresh1000_2ep_cos": ["sample_draw=fresh", "sample_size=1000", "methods=[sft, dpo, gold]",
                          "sft_train.epochs=2", "sft_train.schedule=cosine", "dpo_train.epochs=2",
                          "dpo_train.schedule=cosine", "dpo_train.nll_weight=1.0"],
    "all_n4_2ep_cos_sft": ["sample_size=null", "samples_per_problem=4", "methods=[sft, gold]",
                           "sft_train.epochs=2", "sft_train.schedule=cosine", "sft_train.warmup_steps=10"],
    "all_n4_2ep_cos_dpo": ["sample_size=null", "samples_per_problem=4", "methods=[dpo]",
                           "dpo_train.nll_weight=1.0",
                           "pairs_per_problem=1", "dpo_train.epochs=2", "dpo_train.schedule=cosine",
                           "dpo_train.warmup_steps=10"],
    "all_n4_2ep_cos_dpo_nll2": ["sample_size=null", "samples_per_problem=4", "methods=[dpo]",
                                "dpo_train.nll_weight=2.0",
                                "pairs_per_problem=1", "dpo_train.epochs=2", "dpo_train.schedule=cosine",
                                "dpo_train.warmup_steps=10"],
    "all_n4_lr1e-4_nll": ["sample_size=null", "samples_per_problem=4", "sft_train.lr=1e-4",
                          "dpo_train.lr=2e-5", "dpo_train.nll_weight=1.0"],
    "all_n4_lr1e-4_nll_cap2": ["sample_size=null", "samples_per_problem=4", "sft_train.lr=1e-4",
                               "dpo_train.lr=2e-5", "dpo_train.nll_weight=1.0", "sft_max_per_problem=2",
                               "pairs_per_problem=2"],
}
# The preset's round recipe as chosen above (whole train set, SFT/DPO/gold, NLL term, cosine), on
# top of which the cheaper candidates below change only what sets the cost of a seed: samples per
# problem and epochs per round (M1's cost is set with --m1-set).
PRESET_ROUNDS = ["sample_size=null", "methods=[sft, dpo, gold]", "dpo_train.nll_weight=1.0",
                 "pairs_per_problem=1",
                 *[f"{t}.{k}" for t in ("sft_train", "dpo_train")
                   for k in ("schedule=cosine", "warmup_steps=10")]]
VARIANTS.update({
    "preset_n4_2ep": [*PRESET_ROUNDS, "samples_per_problem=4", "sft_train.epochs=2", "dpo_train.epochs=2"],
    "preset_n2_2ep": [*PRESET_ROUNDS, "samples_per_problem=2", "sft_train.epochs=2", "dpo_train.epochs=2"],
    "preset_n2_1ep": [*PRESET_ROUNDS, "samples_per_problem=2", "sft_train.epochs=1", "dpo_train.epochs=1",
                      "sft_train.warmup_steps=5", "dpo_train.warmup_steps=5"],
    "preset_n4_1ep": [*PRESET_ROUNDS, "samples_per_problem=4", "sft_train.epochs=1", "dpo_train.epochs=1",
                      "sft_train.warmup_steps=5", "dpo_train.warmup_steps=5"],
    # the preset's rounds as they are now (DPO's NLL weight 2), for other M1s (--m1-set)
    "preset_nll2": [*PRESET_ROUNDS, "samples_per_problem=4", "sft_train.epochs=2", "dpo_train.epochs=2",
                    "dpo_train.nll_weight=2.0"],
})
# The recipe the sweep starts from (the preset's before the sweep chose fresh draws and the NLL
# term), pinned so that every variant below means the same whatever the preset holds now.
SWEEP_BASE = ["methods=[sft, dpo]", "seeds=[]", "sample_draw=fixed", "dpo_train.nll_weight=0.0",
              "sample_size=400",
              "samples_per_problem=8", "pairs_per_problem=null",
              *[f"{t}.{k}" for t in ("sft_train", "dpo_train")
                for k in ("epochs=1", "schedule=constant", "warmup_steps=5")],
              "sft_train.lr=3e-4", "dpo_train.lr=5e-5"]
COLLAPSE = 0.05


def _study(overrides: list[str], out: Path):
    from reversalkit.study import Study, StudyConfig  # noqa: PLC0415

    cfg = StudyConfig.preset("tiny").with_overrides(overrides).replace(out_dir=str(out))
    return Study(cfg, print_summary=False).run()


def train_m1(seed: int, out: Path, extra: list[str]) -> Path:
    """M1 of one seed (the preset's recipe; `extra` holds the dev evaluation), evaluated on dev;
    returns its model directory."""
    _study([f"seed={seed}", "seeds=[]", "iterations=1", *extra], out)
    return out / "nodes" / "m1" / "model"


def _chosen_reward(train: dict[str, Any] | None) -> float | None:
    rewards = (train or {}).get("chosen_rewards") or []
    tail = rewards[-max(1, len(rewards) // 4):]
    return statistics.fmean(tail) if tail else None


def _correct(run: Path, node: str) -> list[float]:
    """Greedy correctness per dev problem of one iterate, in problem order."""
    with gzip.open(run / "nodes" / node / "eval" / "id.greedy.jsonl.gz", "rt") as fh:
        return [float(json.loads(line)["correct"]) for line in fh]


def summarize(results: dict[str, Any], run: Path) -> dict[str, dict[str, list]]:
    """method -> {"pass1", "coverage", "chosen", "gain_ci"} by iteration; gain_ci is the paired
    bootstrap 95% CI over dev problems of pass@1(M_t) - pass@1(M1)."""
    from reversalkit.metrics import paired_bootstrap_ci  # noqa: PLC0415

    out = {}
    for method, entries in results["methods"].items():
        if not entries:
            continue
        m1 = _correct(run, entries[0]["node"])
        gains = [paired_bootstrap_ci(_correct(run, e["node"]), m1, n_resamples=2000, seed=0)
                 for e in entries[1:]]
        out[method] = {
            "pass1": [e["eval"]["id"]["pass1"]["mean"] for e in entries],
            "coverage": [(e.get("train_coverage") or {}).get("mean") for e in entries],
            "chosen": [_chosen_reward(e.get("train")) for e in entries[1:]],
            "gain_ci": [[g.mean, g.low, g.high] for g in gains],
        }
    return out


def score(rows: list[dict[str, list]]) -> tuple[float, float]:
    """(mean best-iterate gain over M1, worst last-iterate change) over seeds of one method."""
    gains = [max(r["pass1"][1:]) - r["pass1"][0] for r in rows]
    lasts = [r["pass1"][-1] - r["pass1"][0] for r in rows]
    return statistics.fmean(gains), min(lasts)


def _fmt(values: list, digits: int = 3) -> str:
    return " ".join("-" if v is None else f"{v:.{digits}f}" for v in values)


def _best_ci(row: dict[str, list]) -> str:
    best = max(range(len(row["gain_ci"])), key=lambda i: row["pass1"][i + 1])
    mean, lo, hi = row["gain_ci"][best]
    return f"M{best + 2}: {mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def table(all_rows: dict[str, dict[str, list[dict[str, list]]]]) -> str:
    lines = ["| variant | method | dev pass@1 by iteration (per seed) | best gain | worst last change | "
             "paired 95% CI of the best iterate's gain (first seed) | train coverage (first seed) | "
             "DPO chosen reward, end of round (first seed) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for variant, methods in all_rows.items():
        for method, rows in methods.items():
            gain, last = score(rows)
            flag = " (collapse)" if last < -COLLAPSE else ""
            lines.append(f"| {variant} | {method} | {' / '.join(_fmt(r['pass1']) for r in rows)} | "
                         f"{gain:+.3f} | {last:+.3f}{flag} | {_best_ci(rows[0])} | "
                         f"{_fmt(rows[0]['coverage'])} | "
                         f"{_fmt(rows[0]['chosen'], 2) if method == 'dpo' else ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="directory of the sweep's runs (resumable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--m1", type=Path, default=None, help="an M1 model directory to use (one seed only)")
    ap.add_argument("--m1-set", nargs="*", default=[], help="overrides of M1's training (e.g. "
                    "m1_train.max_steps=300); recorded in the run names")
    ap.add_argument("--table", type=Path, default=None, help="also write the markdown table here")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads per run (num_threads)")
    ap.add_argument("--analyze", type=Path, default=None, metavar="RUN",
                    help="print where M1 of a sweep run goes wrong (its train samples and dev answers), "
                    "then exit")
    ap.add_argument("--table-only", action="store_true", help="tabulate the runs already in --out (finished "
                    "or partial) without running anything")
    args = ap.parse_args(argv)
    if args.m1 is not None and len(args.seeds) != 1:
        ap.error("--m1 names one M1: give exactly one seed")
    base = DEV_EVAL + ([f"num_threads={args.threads}"] if args.threads else [])
    tag = "-".join(s.replace("m1_train.", "").replace("=", "") for s in args.m1_set) or "m1"
    if args.analyze is not None:
        return analyze(args.analyze)
    all_rows: dict[str, dict[str, list]] = {v: {} for v in args.variants}
    if args.table_only:
        return _table_only(args, tag, all_rows)
    for seed in args.seeds:
        m1 = args.m1 or train_m1(seed, args.out / f"seed{seed}" / tag / "m1", base + args.m1_set)
        for variant in args.variants:
            res = _study([*base, f"seed={seed}", *SWEEP_BASE, f"m1={m1}", *args.m1_set, *VARIANTS[variant]],
                         args.out / f"seed{seed}" / tag / variant)
            rows = summarize(res, args.out / f"seed{seed}" / tag / variant)
            for method, row in rows.items():
                all_rows[variant].setdefault(method, []).append(row)
            print(f"seed {seed} {variant}: " + "; ".join(f"{m} {_fmt(r['pass1'])}" for m, r in rows.items()),
                  flush=True)
    text = table(all_rows)
    print(text)
    (args.out / f"sweep-{tag}.json").write_text(json.dumps(all_rows, indent=1))
    if args.table is not None:
        args.table.write_text(f"Seeds {args.seeds}, M1 {tag}\n\n{text}\n")
    return 0


def analyze(run: Path) -> int:
    """M1's wrong train samples by kind (a false equation, or true equations and a wrong answer),
    and its dev pass@1 on problems whose equations all occur in some train solution vs the rest."""
    from reversalkit.study import StudyConfig  # noqa: PLC0415
    from reversalkit.study.store import RunStore  # noqa: PLC0415
    from reversalkit.study.workspace import load_eval_sets  # noqa: PLC0415
    from reversalkit.tasks import extract, get_task  # noqa: PLC0415

    store = RunStore.read_only(run)
    cfg = StudyConfig.from_stored(store.config())
    task = get_task(cfg.task, **dict(cfg.task_options))
    kinds = {"correct": 0, "false equation": 0, "true equations, wrong answer": 0, "no equation": 0}
    for r in store.read_jsonl("nodes/m1/train_samples.jsonl.gz"):
        eqs = extract.annotations(r["text"])
        kind = ("correct" if r["correct"] else "no equation" if not eqs else
                "false equation" if not all(extract.equation_holds(e) for e in eqs) else
                "true equations, wrong answer")
        kinds[kind] += 1
    print("M1's train samples:", kinds)
    seen = {e for p in task.load("train") for sol in p.meta["solutions"] for e in extract.annotations(sol)}
    greedy = {r["id"]: r["correct"] for r in store.read_jsonl("nodes/m1/eval/id.greedy.jsonl.gz")}
    groups: dict[bool, list[bool]] = {True: [], False: []}
    for p in load_eval_sets(cfg, task)["id"][1]:
        known = any(all(e in seen for e in extract.annotations(sol)) for sol in p.meta["solutions"])
        groups[known].append(greedy[str(p.id)])
    for known, vals in groups.items():
        which = "with" if known else "without"
        print(f"M1 greedy pass@1 on {cfg.id_split} problems {which} a solution whose equations all occur "
              f"in train: {sum(vals) / max(1, len(vals)):.3f} ({len(vals)} problems)")
    return 0


def _table_only(args: argparse.Namespace, tag: str, all_rows: dict[str, dict[str, list]]) -> int:
    from reversalkit.study.results import collect_results  # noqa: PLC0415
    from reversalkit.study.store import RunStore  # noqa: PLC0415

    for seed in args.seeds:
        for variant in args.variants:
            run = args.out / f"seed{seed}" / tag / variant
            if not (run / "manifest.json").exists():
                continue
            res = collect_results(RunStore.read_only(run))
            for method, row in summarize(res, run).items():
                if len(row["pass1"]) > 1:
                    all_rows[variant].setdefault(method, []).append(row)
    text = table({v: m for v, m in all_rows.items() if m})
    print(text)
    if args.table is not None:
        args.table.write_text(f"Seeds {args.seeds}, M1 {tag}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
