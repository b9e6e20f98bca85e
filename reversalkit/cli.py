"""The `reversalkit` command: study, sample, eval, report.

    reversalkit study --preset tiny [--out runs/tiny]          # the embedded default (CPU, no downloads)
    reversalkit study --config study.yaml --set iterations=3 --set sft_train.lr=1e-4 [--fresh]
    reversalkit study --preset tiny --list-options             # every config key with its help
    reversalkit sample --model runs/tiny/nodes/m1/model --task synthetic --split test --n 8 --out s.jsonl
    reversalkit eval --model runs/tiny/nodes/m1/model --preset tiny [--set eval_samples=4] [--out m.json]
    reversalkit report runs/tiny

Options of `study` and `eval` come from `StudyConfig` (a preset or YAML file, then `--set`
overrides with dotted keys for nested configs); rerunning `study` on the same --out resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any


def _config_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", help="built-in preset (tiny, gsm8k)")
    src.add_argument("--config", type=Path, help="study config YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable; dotted keys for nested configs, e.g. "
                        "sft_train.lr=1e-4; values parse as YAML)")
    p.add_argument("--list-options", action="store_true",
                   help="print every config key with its help and exit")


# The sampling options of `reversalkit sample`: SamplingParams' own fields, help and defaults.
SAMPLE_OPTIONS = ("n", "temperature", "top_p", "max_new_tokens", "seed")


def build_parser() -> argparse.ArgumentParser:
    from reversalkit.engine.sequence import SamplingParams  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="reversalkit", description=__doc__.split("\n")[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    # -q also after the subcommand; SUPPRESS keeps a -q given before it
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", required=True)

    st = sub.add_parser("study", parents=[quiet], help="run or resume an iterative self-improvement study")
    _config_args(st)
    st.add_argument("--out", help="run directory (overrides out_dir)")
    st.add_argument("--fresh", action="store_true", help="delete an existing run in --out and start over")
    st.add_argument("--dry-run", action="store_true",
                    help="resolve the config, task and model, print the config and the plan, and exit")
    st.add_argument("--nproc", type=int, default=None,
                    help="run the study as N processes on this machine (torchrun: one device per process; "
                    "gloo on CPU, nccl on CUDA); on several machines launch `torchrun ... -m reversalkit "
                    "study` yourself")
    st.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2: independent replicates (M1 and every "
                    "round per seed) pooled in one report (the `seeds` key)")
    st.add_argument("--jobs", type=int, default=None,
                    help="with several seeds: run up to N at once, each a process with cores/N threads "
                    "(the `seed_jobs` key; 0 = auto, one per two cores)")

    sa = sub.add_parser("sample", parents=[quiet], help="sample completions from a checkpoint and check them")
    sa.add_argument("--model", required=True, help="checkpoint directory or HF id")
    sa.add_argument("--task", default="synthetic",
                    help="task name or package.module:Class (default synthetic)")
    sa.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                    help="task constructor option (repeatable; values parse as YAML)")
    sa.add_argument("--split", default="test", help="split of the task (default test)")
    sa.add_argument("--limit", type=int, default=None, help="first N problems")
    SamplingParams.add_arguments(sa, SAMPLE_OPTIONS)
    sa.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    sa.add_argument("--out", type=Path, help="write JSON lines here (default: stdout)")

    ev = sub.add_parser("eval", parents=[quiet],
                        help="evaluate one checkpoint the way a study evaluates an iterate")
    ev.add_argument("--model", required=True, help="checkpoint directory or HF id")
    _config_args(ev)
    ev.add_argument("--out", type=Path, help="write the metrics JSON here")

    rp = sub.add_parser("report", parents=[quiet], help="(re)build report.md / index.html of a run directory")
    rp.add_argument("run_dir", type=Path)
    return parser


def load_config(args: argparse.Namespace):
    from reversalkit.study.config import StudyConfig  # noqa: PLC0415

    if args.config is not None:
        cfg = StudyConfig.from_yaml(args.config)
    else:
        cfg = StudyConfig.preset(args.preset) if args.preset else StudyConfig()
    if not args.overrides:
        return cfg
    out = cfg.with_overrides(args.overrides)
    if out.task != cfg.task and out.task_options == cfg.task_options:
        out = out.replace(task_options={})  # the preset's task options belong to the preset's task
    return out


def cmd_study(args: argparse.Namespace) -> int:

    if args.list_options:  # the values in force for this preset / config / overrides
        print("\n".join(load_config(args).value_lines()))
        return 0
    if args.preset is None and args.config is None:
        print("reversalkit study: give --preset NAME (e.g. tiny) or --config FILE.yaml", file=sys.stderr)
        return 2
    cfg = load_config(args)
    if args.out:
        cfg = cfg.replace(out_dir=args.out)
    if args.quiet:
        cfg = cfg.replace(progress=False)
    if args.seeds:
        try:
            seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--seeds {args.seeds!r}: give comma-separated integers, "
                             "e.g. --seeds 0,1,2") from None
        cfg = cfg.replace(seeds=seeds)
    if args.jobs is not None:
        cfg = cfg.replace(seed_jobs=args.jobs)
    from reversalkit.study.loop import Study  # noqa: PLC0415

    if args.dry_run:  # the task and model resolve, nothing is created
        study = Study(cfg)
        study.check()
        print(study.cfg.to_yaml(), end="")
        from reversalkit.device import resolve_device  # noqa: PLC0415
        from reversalkit.dist import launched_by_torchrun  # noqa: PLC0415
        from reversalkit.study.seed_jobs import resolve_jobs  # noqa: PLC0415

        runs = max(1, len(cfg.seeds))
        jobs = resolve_jobs(cfg, device=resolve_device(cfg.device), distributed=launched_by_torchrun())
        print(f"dry run: task {study.cfg.task!r} and model {cfg.m1 or cfg.model!r} resolve; "
              f"{len(study.planned_steps())} steps x {runs} seed run(s) planned in {cfg.out_dir}"
              + (f", {jobs} at a time" if jobs > 1 else ""), file=sys.stderr)
        return 0
    if args.nproc is not None:
        return _launch(args)
    from reversalkit import dist  # noqa: PLC0415

    try:
        Study(cfg, fresh=args.fresh).run()
    finally:
        dist.close()
    if dist.rank_from_env() == 0:
        print(f"report: {Path(cfg.out_dir) / 'report' / 'report.md'}")
    return 0


def _launch(args: argparse.Namespace) -> int:
    """Rerun this command (without --nproc) as args.nproc ranks under torch.distributed.run."""
    import subprocess  # noqa: PLC0415

    from reversalkit.dist import launched_by_torchrun  # noqa: PLC0415

    if args.nproc < 1:
        raise ValueError(f"--nproc {args.nproc}: give a number of processes >= 1")
    if launched_by_torchrun():
        raise ValueError("--nproc inside a torchrun job: drop --nproc (torchrun already started the ranks)")
    argv, rest = list(args.argv), []
    while argv:
        item = argv.pop(0)
        if item == "--nproc":
            argv.pop(0)
        elif not item.startswith("--nproc="):
            rest.append(item)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
           "-m", "reversalkit", *rest]
    rc = subprocess.call(cmd)
    if rc != 0:
        print(f"reversalkit study: the {args.nproc}-process job failed (exit {rc}); torchrun's summary above "
              "names the rank, the study log the step; rerun the same command to resume", file=sys.stderr)
    return 1 if rc != 0 else 0


def _kv(items: list[str]) -> dict[str, Any]:
    import yaml  # noqa: PLC0415

    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"{item!r} must look like key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _load_checkpoint(spec: str, device: str):
    from reversalkit import models  # noqa: PLC0415
    from reversalkit.device import resolve_device  # noqa: PLC0415

    dev = resolve_device(device)
    return models.load_model(spec, device=dev, dtype="auto"), models.load_tokenizer(spec), dev


def cmd_sample(args: argparse.Namespace) -> int:
    from reversalkit.engine import Engine, SamplingParams  # noqa: PLC0415
    from reversalkit.study import rollout  # noqa: PLC0415
    from reversalkit.tasks import get_task  # noqa: PLC0415

    params = SamplingParams.from_arguments(args, SAMPLE_OPTIONS)  # bad values fail before any work
    task = get_task(args.task, **_kv(args.task_option))
    problems = task.load(args.split)[: args.limit] if args.limit else task.load(args.split)
    model, tok, dev = _load_checkpoint(args.model, args.device)
    engine = Engine(model, tok, device=dev)
    seed = params.seed if params.seed is not None else secrets.randbits(62)
    if params.seed is None:
        print(f"seed {seed} (pass --seed {seed} to draw the same samples again)", file=sys.stderr)
    records = rollout.generate(engine, task, problems, n=params.n, temperature=params.temperature,
                               top_p=params.top_p, max_new_tokens=params.max_new_tokens, seed=seed,
                               progress=not args.quiet)
    rollout.reward(task, problems, records)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    if args.out:
        args.out.write_text(lines)
    else:
        sys.stdout.write(lines)
    acc = sum(r["correct"] for r in records) / max(1, len(records))
    print(f"{len(records)} completions for {len(problems)} problems, {acc:.3f} correct", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from reversalkit.engine import Engine  # noqa: PLC0415
    from reversalkit.metrics import load_sentence_model  # noqa: PLC0415
    from reversalkit.study import StudyConfig, stages  # noqa: PLC0415
    from reversalkit.study.tables import fmt_ci  # noqa: PLC0415
    from reversalkit.study.workspace import load_eval_sets  # noqa: PLC0415
    from reversalkit.tasks import get_task  # noqa: PLC0415

    if args.list_options:
        print("\n".join(StudyConfig.help_lines()))
        return 0
    cfg = load_config(args)
    if args.quiet:
        cfg = cfg.replace(progress=False)
    if cfg.num_threads:
        import torch  # noqa: PLC0415

        torch.set_num_threads(cfg.num_threads)
    task = get_task(cfg.task, **dict(cfg.task_options))
    model, tok, dev = _load_checkpoint(args.model, cfg.device)
    engine = Engine(model, tok, device=dev, block_size=cfg.block_size, kv_cache_memory=cfg.kv_cache_memory)
    sbert = None if cfg.sbert_model.lower() == "none" else load_sentence_model(
        None if cfg.sbert_model == "default" else cfg.sbert_model, device=dev)
    out = {}
    results = stages.evaluate_sets(engine, load_eval_sets(cfg, task), cfg, sbert=sbert, progress=cfg.progress)
    for split, (metrics, _, _) in results.items():
        out[split] = metrics
        div = metrics.get("diversity", {}).get("correct", {})
        print(f"{split}: pass@1 {fmt_ci(metrics['pass1'])}  "
              f"distinct-n (correct) {fmt_ci(div.get('distinct_n'))}  "
              f"SBERT (correct) {fmt_ci(div.get('sbert'))}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from reversalkit.study.config import StudyConfig  # noqa: PLC0415
    from reversalkit.study.publish import publish_run  # noqa: PLC0415
    from reversalkit.study.results import collect_results  # noqa: PLC0415
    from reversalkit.study.store import RunStore  # noqa: PLC0415
    from reversalkit.study.tables import terminal_summary  # noqa: PLC0415

    store = RunStore.read_only(args.run_dir)
    if store.config().get("seeds"):  # a multi-seed study: pool the seeds that have runs
        return _report_pooled(args.run_dir, store)
    results = collect_results(store)
    if not any(results["methods"].values()):
        print(f"reversalkit report: {args.run_dir} has no evaluated iterate yet (M1's evaluation has not "
              "finished); run the study to get one", file=sys.stderr)
        return 2
    results, md = publish_run(store, StudyConfig.from_stored(store.config()), results)
    print(terminal_summary(results))
    print(f"report: {md}")
    return 0


def _report_pooled(run_dir: Path, store: Any) -> int:
    from reversalkit.study.config import StudyConfig  # noqa: PLC0415
    from reversalkit.study.pooled_report import pooled_summary  # noqa: PLC0415
    from reversalkit.study.publish import publish_pooled  # noqa: PLC0415
    from reversalkit.study.seeds import seed_dir  # noqa: PLC0415
    from reversalkit.study.store import RunStore  # noqa: PLC0415

    cfg = StudyConfig.from_stored(store.config())
    runs = [(s, RunStore.read_only(seed_dir(run_dir, s))) for s in cfg.seeds
            if (seed_dir(run_dir, s) / "manifest.json").exists()]
    if not runs:
        print(f"reversalkit report: {run_dir} has no seed runs yet; run the study", file=sys.stderr)
        return 2
    results, md = publish_pooled(store, cfg, runs)
    print(pooled_summary(results))
    print(f"report: {md}")
    return 0


COMMANDS = {"study": cmd_study, "sample": cmd_sample, "eval": cmd_eval, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    from reversalkit.engine.host import keep_freed_memory  # noqa: PLC0415

    # Settings for the process the CLI owns: tokenizers without its thread pool (a process that
    # forks after using it gets a warning per fork), and freed heap memory kept for reuse (removes
    # page faults from every CPU decode step, see engine/host.py).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    keep_freed_memory()
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quiet:  # this process is the CLI's: its libraries' bars go too
        import transformers  # noqa: PLC0415

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    rank = int(os.environ.get("RANK", "0") or 0)  # under torchrun, rank 0 speaks for the job
    level = logging.WARNING if args.quiet or rank != 0 else logging.INFO
    before = list(logging.getLogger().handlers)
    prefix = f"rank {rank}: " if rank else ""
    logging.basicConfig(level=level, format=f"%(asctime)s {prefix}%(message)s", datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:  # a run's log file sets reversalkit's logger to INFO,
        if handler not in before:  # so the console's own level is what keeps --quiet quiet
            handler.setLevel(level)
    from reversalkit.study.seed_jobs import SeedJobsFailed  # noqa: PLC0415
    from reversalkit.study.store import RunLockedError  # noqa: PLC0415

    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, RunLockedError) as exc:
        print(f"reversalkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a model that is neither a local directory nor reachable on the hub
        print(f"reversalkit {args.command}: error: {exc}", file=sys.stderr)
        return 3
    except SeedJobsFailed as exc:  # each seed's process printed its own error above
        print(f"reversalkit {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # one line, no traceback; Study says where it stopped
        where = str(exc) or "stopped; run the same command to resume"
        print(f"reversalkit {args.command}: {where}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
