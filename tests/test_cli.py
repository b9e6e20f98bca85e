"""The reversalkit CLI: argument parsing, config resolution, report on a run directory."""

import re
import sys

import pytest
import yaml

from reversalkit.cli import build_parser, load_config, main
from reversalkit.study.config import StudyConfig
from reversalkit.study.store import RunStore

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_study_report import fake_results  # noqa: E402


def test_parse_study_args():
    args = build_parser().parse_args(["study", "--preset", "tiny", "--set", "iterations=2", "--set",
                                      "sft_train.lr=1e-4", "--out", "r", "--fresh"])
    assert (args.command, args.preset, args.out, args.fresh) == ("study", "tiny", "r", True)
    cfg = load_config(args)
    assert cfg.iterations == 2 and cfg.sft_train.lr == 1e-4
    with pytest.raises(SystemExit):
        build_parser().parse_args(["study", "--preset", "tiny", "--config", "x.yaml"])


def test_study_dry_run_prints_resolved_config(capsys, tmp_path):
    cfg_file = tmp_path / "s.yaml"
    cfg_file.write_text("task: synthetic\niterations: 3\nmethods: [sft]\n")
    assert main(["study", "--config", str(cfg_file), "--set", "seed=7", "--out", str(tmp_path / "o"),
                 "--dry-run"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["iterations"] == 3 and printed["seed"] == 7 and printed["methods"] == ["sft"]
    assert printed["out_dir"] == str(tmp_path / "o")


def test_errors_are_one_line(capsys, tmp_path):
    assert main(["study", "--preset", "tiny", "--set", "iterations=0", "--dry-run"]) == 2
    assert "iterations must be >= 1" in capsys.readouterr().err
    assert main(["study"]) == 2
    assert main(["report", str(tmp_path)]) == 2
    assert "not a reversalkit run directory" in capsys.readouterr().err


def test_list_options(capsys):
    assert main(["study", "--list-options"]) == 0
    out = capsys.readouterr().out
    assert "samples_per_problem = 50  # " in out and "dpo_train.lr = " in out


def test_report_command_on_run_dir(tmp_path, capsys):
    cfg = StudyConfig(methods=("sft", "dpo"), iterations=3, eval_samples=4, pass_k=(1, 4))
    store = RunStore.open(tmp_path / "run", cfg.to_dict())
    fake = fake_results({"sft": [0.3, 0.4, 0.35], "dpo": [0.3, 0.33, 0.36]})
    for method, nodes in (("sft", ["m1", "m1-s", "m1-ss"]), ("dpo", ["m1", "m1-d", "m1-dd"])):
        for e, node in zip(fake["methods"][method], nodes):
            store.write_json(f"nodes/{node}/eval.json",
                             {"splits": e["eval"], "transitions": e["transitions"]})
    store.write_json("nodes/m1/train_samples.json", {"coverage": {"mean": 0.31, "lo": 0.3, "hi": 0.32}})
    store.close()
    assert main(["report", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "M1 train coverage 0.310 [0.300, 0.320]" in out
    assert (tmp_path / "run/report/report.md").exists() and (tmp_path / "run/report/index.html").exists()
    text = (tmp_path / "run/report/report.md").read_text()
    assert "| sft | 2 | 0.300 -> 0.400 |" in text and "| dpo | 3 | 0.300 -> 0.360 |" in text


def test_quiet_before_or_after_the_subcommand():
    p = build_parser()
    assert p.parse_args(["study", "--preset", "tiny", "-q"]).quiet
    assert p.parse_args(["-q", "study", "--preset", "tiny"]).quiet
    assert not p.parse_args(["study", "--preset", "tiny"]).quiet
    assert p.parse_args(["report", "somewhere", "--quiet"]).quiet


def test_report_on_a_run_without_an_evaluation(tmp_path, capsys):
    cfg = StudyConfig(methods=("sft",), iterations=2)
    RunStore.open(tmp_path / "run", cfg.to_dict()).close()
    assert main(["report", str(tmp_path / "run")]) == 2
    assert "no evaluated iterate yet" in capsys.readouterr().err


def test_dry_run_resolves_a_custom_task_and_the_model(capsys, tmp_path):
    out = tmp_path / "o"
    assert main(["study", "--preset", "tiny", "--set", "task=test_study_task_identity:OtherSumTask",
                 "--out", str(out), "--dry-run"]) == 0
    io = capsys.readouterr()
    assert yaml.safe_load(io.out)["task"] == "test_study_task_identity:OtherSumTask"
    assert "dry run: task 'test_study_task_identity:OtherSumTask'" in io.err and "steps x 3 seed" in io.err
    assert not out.exists()
    for bad, needle in [("task=no_such_mod:Task", "cannot import module 'no_such_mod'"),
                        ("task=test_study_task_identity:Nope", "Nope"),
                        (f"m1={tmp_path / 'missing'}", "m1: .*missing does not exist")]:
        assert main(["study", "--preset", "tiny", "--set", bad, "--out", str(out), "--dry-run"]) != 0
        err = capsys.readouterr().err
        assert re.search(needle, err) and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_sample_options_are_sampling_params_fields(capsys):
    from reversalkit.cli import SAMPLE_OPTIONS
    from reversalkit.engine import SamplingParams

    args = build_parser().parse_args(["sample", "--model", "m"])
    assert SamplingParams.from_arguments(args, SAMPLE_OPTIONS) == SamplingParams()  # the API's defaults
    args = build_parser().parse_args(["sample", "--model", "m", "--temperature", "0", "--top-p", "0.9",
                                      "--seed", "3"])
    got = SamplingParams.from_arguments(args, SAMPLE_OPTIONS)
    assert (got.temperature, got.top_p, got.seed, got.n) == (0.0, 0.9, 3, 1)
    # a bad value is one line naming the option, before any model loads
    assert main(["sample", "--model", "/no/such/model", "--temperature", "hot"]) == 2
    err = capsys.readouterr().err.strip()
    assert "temperature" in err and len(err.splitlines()) == 1
