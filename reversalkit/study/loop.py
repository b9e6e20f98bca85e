"""`Study(config).run()`: M1 once, then T-1 rounds of each method, evaluated, stored, resumable.

Steps and their artifacts (under the run directory, see `store.py`):
    m1/train        nodes/m1/model/ (safetensors + tokenizer), nodes/m1/round.json
    <node>/eval     nodes/<node>/eval.json, nodes/<node>/eval/<split>.{greedy,samples}.jsonl.gz
    m1/is           nodes/m1/eval/id.is_samples.jsonl.gz (with m1_is_samples: M1's extra samples, for
                    its pass@N on the improvement sets only)
    <node>/sample   nodes/<node>/train_samples.jsonl.gz (+ .json: coverage), the next round's raw data
    <node>/ref      nodes/<child>/ref_logps.safetensors (DPO reference log-probs, computed once)
    <node>/train    nodes/<node>/model/, nodes/<node>/round.json (D_t statistics, training record)
A step is skipped when the manifest lists it, so rerunning the same command resumes after the
last finished step. Every number depends only on stored artifacts and seeds derived from the
lineage, which is why a resumed run reproduces an uninterrupted one.

Under torchrun every rank runs this loop (`reversalkit.dist`): rank 0 opens the run store and
decides which steps are done, the others follow it with a read-only view (`RunStore.follower`).
Sampling and evaluation shard the problems over the ranks and gather the records on rank 0, which
writes them and computes the metrics; training shares every step over the ranks (the DPO reference
pass its batches) and rank 0 saves the checkpoint. A step is marked done only after every rank
finished it, and rank 0 writes every artifact atomically, so a job that loses a rank leaves no
partial result and a relaunch, with any number of ranks, resumes at that step. """

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import safetensors.torch
import torch

from reversalkit import dist
from reversalkit.study import opening, seed_jobs, stages
from reversalkit.study.config import NON_RESULT_KEYS, StudyConfig, upgrade_config
from reversalkit.study.plan import ROOT, Node, method_nodes, node_dir, sampled_by
from reversalkit.study.pooled_report import pooled_summary
from reversalkit.study.publish import publish_pooled, publish_run
from reversalkit.study.results import ID_SPLIT
from reversalkit.study.store import RunStore
from reversalkit.study.tables import terminal_summary
from reversalkit.study.workspace import Workspace
from reversalkit.tasks import get_task
from reversalkit.tasks.registry import task_spec

log = logging.getLogger("reversalkit.study")
EventHook = Callable[[str, str], None]


class StudyInterrupted(KeyboardInterrupt):
    """Ctrl-C during a step: the step's partial work is discarded and a rerun resumes there."""

    def __init__(self, step: str, run_dir: str):
        super().__init__(f"stopped in {step} of {run_dir}; run the same command to resume")
        self.step, self.run_dir = step, run_dir


class RankStopped(RuntimeError):
    """The launcher stopped this rank (SIGTERM): under torchrun, because another rank ended."""


class Study:
    """One study run. `on_event(kind, name)` is called with kind 'step_start', 'artifact' (a file
    or directory just landed) and 'step_done'; `task` / `ood_tasks` accept task objects that
    override the config's task names (user-defined tasks)."""

    def __init__(self, config: StudyConfig, *, fresh: bool = False, on_event: EventHook | None = None,
                 task: Any = None, ood_tasks: dict[str, Any] | None = None, print_summary: bool = True):
        self.cfg = config
        self.fresh = fresh
        # a hook or task objects cannot reach another process: such a study runs its seeds here
        self.in_process = on_event is not None or task is not None or bool(ood_tasks)
        self.on_event = on_event or (lambda kind, name: None)
        self.task_override = task
        self.ood_override = ood_tasks or {}
        self.print_summary = print_summary
        self.store: RunStore | None = None
        self._times: dict[str, list[float]] = {}  # seconds of each step kind in this invocation
        self.ws: Workspace | None = None
        self.group = dist.SINGLE
        self._running: str | None = None  # the step in progress (named when the launcher stops a rank)

    # ---- driver --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run (or resume) the study; returns the results dict (also in results.json). With
        `seeds`, one run per seed and their pooled results (see `reversalkit.study.seeds`)."""
        if self.cfg.seeds:
            return self._run_seeds()
        task = self._resolve_task()  # a bad task or model fails here, before the run directory exists
        cfg = self.cfg
        if not opening.m1_done(cfg.out_dir):
            opening.check_model_source(cfg)
        self.group = group = dist.process_group(stages.resolve_device(cfg.device))
        store = opening.open_store(group, cfg.out_dir, cfg.to_dict(), fresh=self.fresh,
                                   ignore_keys=NON_RESULT_KEYS, upgrade=upgrade_config)
        store.on_write = lambda rel: self.on_event("artifact", rel)
        handler = opening.file_handler(store) if group.is_main else logging.NullHandler()
        # torchrun ends the other ranks with SIGTERM when one dies: the handler logs the running step
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, self._on_sigterm) if group.distributed and in_main else None
        failed = False
        self.store = store
        threads, started = torch.get_num_threads(), time.perf_counter()
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        try:
            log.info("study in %s (%d steps already done, %d process(es))", store.root, len(store.steps()),
                     group.world)
            self.ws = Workspace(cfg, store, task=task, ood_tasks=self.ood_override, group=group)
            identity = {"task": task_spec(task), "problems": self.ws.problem_digest()}
            opening.check_task_identity(store, identity)
            self._step("m1/train", self._train_m1)
            self._step("m1/eval", lambda: self._evaluate(ROOT))
            if cfg.m1_extra_samples:
                self._step("m1/is", self._m1_is_samples)
            for method in sorted(cfg.methods, key=lambda m: m == "gold"):  # gold reuses SFT's samples
                chain = method_nodes(cfg.round_kinds(method))
                for parent, node in zip(chain, chain[1:]):
                    self._round(node, parent)
            if not group.is_main:
                return group.broadcast(None)
            results, _ = publish_run(store, cfg)
            log.info("report: %s (this invocation took %.0f s)", store.path("report/report.md"),
                     time.perf_counter() - started)
            if self.print_summary:
                print(terminal_summary(results))
            return group.broadcast(results)
        except BaseException:
            failed = True  # the handler stays: the launcher may still signal this ending rank
            raise
        finally:
            if previous is not None and not failed:
                signal.signal(signal.SIGTERM, previous)
            torch.set_num_threads(threads)
            logging.getLogger("reversalkit").removeHandler(handler)
            handler.close()
            if self.ws is not None:
                self.ws.close()
            store.close()

    def _run_seeds(self) -> dict[str, Any]:
        from reversalkit.study import seeds as replicates  # noqa: PLC0415

        cfg = self.cfg
        # seeds can be added to a finished set: each seed's run checks its own config
        group = dist.process_group(stages.resolve_device(cfg.device))
        parent = opening.open_store(group, cfg.out_dir, cfg.to_dict(), fresh=self.fresh,
                                     ignore_keys=(*NON_RESULT_KEYS, "seeds", "seed"), upgrade=upgrade_config)
        try:
            subs = [cfg.replace(seed=seed, seeds=(), out_dir=str(replicates.seed_dir(cfg.out_dir, seed)))
                    for seed in cfg.seeds]
            jobs = 1 if self.in_process else seed_jobs.resolve_jobs(
                cfg, device=stages.resolve_device(cfg.device), distributed=group.distributed)
            if jobs > 1:
                seed_jobs.run_seed_jobs(parent, subs, Study, jobs=jobs, fresh=self.fresh)
            for i, sub in enumerate(subs if jobs == 1 else ()):
                log.info("seed %d (%d of %d)", sub.seed, i + 1, len(subs))
                Study(sub, fresh=self.fresh, on_event=self.on_event, task=self.task_override,
                      ood_tasks=self.ood_override, print_summary=False).run()
            runs = [(sub.seed, RunStore.read_only(sub.out_dir)) for sub in subs]
            if not group.is_main:
                return group.broadcast(None)
            results, _ = publish_pooled(parent, cfg, runs)
            if self.print_summary:
                print(pooled_summary(results))
            return group.broadcast(results)
        finally:
            parent.close()

    def _resolve_task(self) -> Any:
        """The study's task object. A task object or class given to `Study` is recorded in the
        config by its name or 'module:Class' (the preset's task options do not apply to it)."""
        if self.task_override is None:
            return get_task(self.cfg.task, **dict(self.cfg.task_options))
        task = get_task(self.task_override)
        self.cfg = self.cfg.replace(task=task_spec(task), task_options={})
        return task

    def check(self) -> None:
        """Resolve the task, the OOD tasks and the model (or M1) source, creating nothing: what
        `run` would fail on first fails here with the same message (`study --dry-run` calls it)."""
        self._resolve_task()
        for name in self.cfg.ood_task_names():
            if name not in self.ood_override:
                get_task(name, **dict(self.cfg.ood_task_options.get(name, {})))
        if not opening.m1_done(self.cfg.out_dir):
            opening.check_model_source(self.cfg)

    def planned_steps(self) -> list[str]:
        """Every step of the run, in the order the loop takes them."""
        cfg, steps = self.cfg, ["m1/train", "m1/eval"] + (["m1/is"] if self.cfg.m1_extra_samples else [])
        for method in sorted(cfg.methods, key=lambda m: m == "gold"):
            chain = method_nodes(cfg.round_kinds(method))
            for node in chain[1:]:
                steps.append(f"{sampled_by(node)}/sample")
                if node.kind == "dpo":
                    steps.append(f"{node.name}/ref")
                steps += [f"{node.name}/train", f"{node.name}/eval"]
        return list(dict.fromkeys(steps))

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        g = self.group
        log.error("rank %d of %d: stopped by the launcher (SIGTERM) in step %s; another rank ended first. "
                  "Relaunch the same command to resume at this step", g.rank, g.world, self._running or "-")
        raise RankStopped(f"rank {g.rank} stopped by the launcher in step {self._running}")

    def _step(self, name: str, fn: Callable[[], dict[str, Any] | None]) -> None:
        assert self.store is not None
        group = self.group
        if group.broadcast(self.store.is_done(name)):  # rank 0's manifest decides
            return
        self.on_event("step_start", name)
        t0, c0, comm0 = time.perf_counter(), time.process_time(), group.comm_seconds
        where = f"rank {group.rank} of {group.world}: " if group.distributed else ""
        self._running = name
        try:
            info = fn() or {}
            group.barrier()  # every rank finished its part before rank 0 marks the step done
        except KeyboardInterrupt:
            log.warning("%sinterrupted in step %s; run the same command to resume", where, name)
            raise StudyInterrupted(name, str(self.store.root)) from None
        except Exception as exc:
            log.exception("%sstep %s failed; rerunning the same command resumes at this step", where, name)
            if group.distributed:
                raise RuntimeError(f"{where}step {name} failed ({type(exc).__name__}: {exc}); relaunch "
                                   "the same command to resume at this step") from exc
            raise
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        if group.distributed:  # rank 0's time in collectives, waiting for other ranks included
            info = {**info, "world": group.world, "comm_seconds": round(group.comm_seconds - comm0, 3)}
        self.store.mark_done(name, seconds=round(seconds, 3), cpu_seconds=round(cpu, 3), **info)
        log.info("step %s done in %.1f s (%.1f s CPU); %s", name, seconds, cpu, self._eta(name, seconds))
        self.on_event("step_done", name)

    def _eta(self, name: str, seconds: float) -> str:
        """'step i of N, about M min left', from the time steps of each kind took so far (M1's
        steps are kinds of their own); the estimate appears once every kind left has been timed."""
        self._times.setdefault(_step_kind(name), []).append(seconds)
        plan = self.planned_steps()
        left = [s for s in plan if not self.store.is_done(s)]
        done = f"step {len(plan) - len(left)} of {len(plan)}"
        if any(_step_kind(s) not in self._times for s in left):
            return done
        mean = {k: sum(v) / len(v) for k, v in self._times.items()}
        return f"{done}, about {sum(mean[_step_kind(s)] for s in left) / 60:.1f} min left"

    def _round(self, node: Node, parent: Node) -> None:
        assert node.parent == parent.name and node.kind is not None
        source = sampled_by(node)
        self._step(f"{source}/sample", lambda: self._sample(Node(source, None, None, parent.iteration)))
        if node.kind == "dpo":
            self._step(f"{node.name}/ref", lambda: self._reference(node))
        self._step(f"{node.name}/train", lambda: self._train(node))
        self._step(f"{node.name}/eval", lambda: self._evaluate(node.name))

    def _progress(self) -> bool:
        return self.cfg.progress and self.group.is_main

    # ---- steps ---------------------------------------------------------------------------
    def _train_m1(self) -> dict[str, Any]:
        ws = self.ws
        if self.cfg.m1 is not None:  # the user's own SFT'd model is M1: stored as given, not trained
            ws.given_m1()
            ws.save_node(ROOT)
            record = {"source": str(self.cfg.m1), "steps": 0}
            self.store.write_json(f"{node_dir(ROOT)}/round.json",
                                  {"kind": None, "parent": None, "train": record})
            log.info("M1 from %s (not trained)", self.cfg.m1)
            return {"m1_source": str(self.cfg.m1)}
        model, tok = ws.base_model()
        record = stages.train_m1(model, tok, ws.task, ws.train, self.cfg, progress=self._progress(),
                                 group=self.group)
        ws.save_node(ROOT)
        self.store.write_json(f"{node_dir(ROOT)}/round.json", {"kind": None, "parent": None, "train": record})
        return {"train_steps": record.get("steps")}

    def _sample(self, node: Node) -> dict[str, Any]:
        ws, cfg, name = self.ws, self.cfg, node.name
        engine = ws.engine_for(name)
        problems = ws.sample_problems(node.iteration)
        records = stages.sample_train(engine, ws.task, problems, cfg, name, progress=self._progress(),
                                      tokenizer=ws.tok, group=self.group)
        if records is None:  # a rank other than 0: its shard went to rank 0
            return {}
        self.store.write_jsonl(f"{node_dir(name)}/train_samples.jsonl.gz", records)
        from reversalkit.study.evaluate import coverage_summary  # noqa: PLC0415

        summary = coverage_summary(records, n_boot=cfg.bootstrap, ci=cfg.ci, seed=cfg.seed)
        self.store.write_json(f"{node_dir(name)}/train_samples.json", summary)
        log.info("%s: coverage on train %.3f (%d/%d samples correct)", name, summary["coverage"]["mean"],
                 summary["correct"], summary["samples"])
        return {"coverage": summary["coverage"]["mean"]}

    def _round_data(self, node: Node, samples: list[dict[str, Any]] | None = None
                    ) -> tuple[list[Any], dict[str, Any]]:
        if samples is None:
            samples = self.store.read_jsonl(f"{node_dir(sampled_by(node))}/train_samples.jsonl.gz")
        return stages.round_data(self.cfg, node.kind, node.name, samples, self.ws.train_by_id, self.ws.task)

    def _reference(self, node: Node) -> dict[str, Any]:
        ws, cfg = self.ws, self.cfg
        samples = self.store.read_jsonl(f"{node_dir(node.parent)}/train_samples.jsonl.gz")
        pairs, stats = self._round_data(node, samples)
        ref_node = node.parent if cfg.reference == "previous" else ROOT
        tcfg = stages.round_train_config(cfg, "dpo", node.name)
        sampled = None
        if cfg.reference_from_samples and ref_node == node.parent:  # the reference drew D_t
            prompts = {pid: ws.task.format_prompt(ws.train_by_id[pid]) for pid in {r["id"] for r in samples}}
            sampled = stages.sampled_reference(pairs, samples, prompts)
        ref, reused = stages.dpo_reference(pairs, tcfg, lambda: ws.model_at(ref_node), sampled=sampled,
                                           group=self.group)
        data = safetensors.torch.save({"ref_logps": ref.contiguous()})
        self.store.write_bytes(f"{node_dir(node.name)}/ref_logps.safetensors", data)
        log.info("%s: reference log-probs of %d pairs, %d from the sampler's", node.name, len(pairs), reused)
        return {"pairs": stats["pairs"], "reference": ref_node, "from_samples": reused}

    def _train(self, node: Node) -> dict[str, Any]:
        ws, cfg = self.ws, self.cfg
        data, stats = self._round_data(node)
        ref = None
        if node.kind == "dpo":
            raw = self.store.path(f"{node_dir(node.name)}/ref_logps.safetensors").read_bytes()
            ref = safetensors.torch.load(raw)["ref_logps"]
            if ref.shape[0] != len(data):
                raise RuntimeError(f"cached reference log-probs of {node.name} hold {ref.shape[0]} pairs, "
                                   f"D_t has {len(data)}; rerun with --fresh")
        start = node.parent if cfg.init == "continue" else ROOT
        model, tok = ws.model_at(start)
        tcfg = stages.round_train_config(cfg, node.kind, node.name)
        log.info("%s: %s round on %s from %s", node.name, node.kind, stats, start)
        ws.mark_training()
        record = stages.train_round(model, tok, node.kind, data, tcfg, ref, progress=self._progress(),
                                    group=self.group)
        if record.get("chosen_rewards"):
            keys = ("chosen_rewards", "rejected_rewards", "reward_accuracy")
            log.info("%s: DPO chosen reward %s, rejected %s, reward accuracy %s (first -> last quarter "
                     "of the round's steps)", node.name, *(_quarters(record[k]) for k in keys))
        ws.save_node(node.name)
        self.store.write_json(f"{node_dir(node.name)}/round.json",
                              {"kind": node.kind, "parent": node.parent, "start": start, "data": stats,
                               "train": record})
        return {"train_steps": record.get("steps")}

    def _m1_is_samples(self) -> dict[str, Any]:
        ws = self.ws
        task, problems = ws.eval_sets[ID_SPLIT]
        records = stages.m1_is_samples(ws.engine_for(ROOT), task, problems, self.cfg,
                                       progress=self._progress(), group=self.group)
        if records is None:  # a rank other than 0: its shard went to rank 0
            return {}
        self.store.write_jsonl(f"{node_dir(ROOT)}/eval/{ID_SPLIT}.is_samples.jsonl.gz", records)
        return {"samples": len(records)}

    def _m1_samples(self, split: str) -> list[dict[str, Any]]:
        """M1's evaluation samples of a test set, with its extra ones for pass@N on IS (ID only)."""
        base = f"{node_dir(ROOT)}/eval/{split}"
        extra = f"{base}.is_samples.jsonl.gz"
        return self.store.read_jsonl(f"{base}.samples.jsonl.gz") + (
            self.store.read_jsonl(extra) if self.store.exists(extra) else [])

    def _evaluate(self, name: str) -> dict[str, Any]:
        ws, cfg, store = self.ws, self.cfg, self.store
        engine = ws.engine_for(name)
        splits, transitions = {}, {}
        sbert = ws.sbert() if self.group.is_main else None  # metrics run on rank 0
        results = stages.evaluate_sets(engine, ws.eval_sets, cfg, sbert=sbert, progress=self._progress(),
                                       group=self.group)
        if not self.group.is_main:  # its shards went to rank 0
            return {}
        for split, (metrics, greedy, samples) in results.items():
            base = f"{node_dir(name)}/eval/{split}"
            store.write_jsonl(f"{base}.greedy.jsonl.gz", greedy)
            store.write_jsonl(f"{base}.samples.jsonl.gz", samples)
            splits[split] = metrics
            if name != ROOT:
                m1 = f"{node_dir(ROOT)}/eval/{split}"  # its greedy records; samples via _m1_samples
                from reversalkit.study.evaluate import transition_summary  # noqa: PLC0415

                transitions[split] = transition_summary(store.read_jsonl(f"{m1}.greedy.jsonl.gz"), greedy,
                                                        self._m1_samples(split), cfg.is_ks())
        store.write_json(f"{node_dir(name)}/eval.json", {"splits": splits, "transitions": transitions})
        p1 = {s: m["pass1"]["mean"] for s, m in splits.items()}
        log.info("%s: greedy pass@1 %s", name, ", ".join(f"{s} {v:.3f}" for s, v in p1.items()))
        return {"pass1": p1.get(ID_SPLIT)}


def _step_kind(step: str) -> str:
    """'m1/train' and 'm1/eval' as themselves, other steps by their stage ('sample', 'train', ...)."""
    return step if step.startswith(f"{ROOT}/") else step.rsplit("/", 1)[-1]


def _quarters(values: list[float]) -> str:
    """'a -> b': means of the first and the last quarter of a per-step series."""
    q = max(1, len(values) // 4)
    return f"{sum(values[:q]) / q:+.3f} -> {sum(values[-q:]) / q:+.3f}"

