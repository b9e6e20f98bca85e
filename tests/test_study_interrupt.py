"""Ctrl-C and crashes: one line naming the step and how to resume, the log records them, and the
rerun finishes the run; the planned steps and the progress line."""

import pytest
from test_study_resume import micro_config

from reversalkit import cli
from reversalkit.study import Study
from reversalkit.study.loop import StudyInterrupted
from reversalkit.tasks import REGISTRY


@pytest.fixture
def easysum():
    yield
    REGISTRY.unregister("easysum")


@pytest.mark.timeout(300)
def test_ctrl_c_names_the_step_and_the_rerun_resumes(tmp_path, easysum):
    cfg = micro_config(tmp_path / "r").with_overrides(["iterations=2", "methods=[sft]"])

    def on_event(kind, name):
        if kind == "artifact" and name == "nodes/m1/model":
            raise KeyboardInterrupt

    with pytest.raises(StudyInterrupted) as info:
        Study(cfg, on_event=on_event, print_summary=False).run()
    assert info.value.step == "m1/train" and "run the same command to resume" in str(info.value)
    log = (tmp_path / "r" / "study.log").read_text()
    assert "interrupted in step m1/train; run the same command to resume" in log

    started = []
    Study(cfg, on_event=lambda k, n: started.append((k, n)), print_summary=False).run()
    assert [n for k, n in started if k == "step_start"][0] == "m1/train"
    log = (tmp_path / "r" / "study.log").read_text()
    assert "step m1-s/eval done" in log and "step 5 of 5, about 0.0 min left" in log


def test_planned_steps_follow_the_loop(easysum):
    cfg = micro_config("unused").with_overrides(["methods=[gold, sft, dpo]"])
    assert Study(cfg).planned_steps() == [
        "m1/train", "m1/eval", "m1/sample", "m1-s/train", "m1-s/eval", "m1-s/sample", "m1-ss/train",
        "m1-ss/eval", "m1-d/ref", "m1-d/train", "m1-d/eval", "m1-d/sample", "m1-dd/ref", "m1-dd/train",
        "m1-dd/eval", "m1-g/train", "m1-g/eval", "m1-gg/train", "m1-gg/eval"]


def test_cli_prints_one_line_on_ctrl_c(monkeypatch, capsys, tmp_path):
    def interrupted(self):
        raise StudyInterrupted("m1-s/train", "runs/x")

    monkeypatch.setattr(Study, "run", interrupted)
    assert cli.main(["-q", "study", "--preset", "tiny", "--out", str(tmp_path / "x")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["reversalkit study: stopped in m1-s/train of runs/x; run the same command to resume"]


@pytest.mark.parametrize("argv, message", [
    (["--set", "model=/nonexistent/m0"], "model: /nonexistent/m0 does not exist"),
    (["--set", "m1=./no/such/m1"], "m1: ./no/such/m1 does not exist"),
    (["--set", "iterations=[1"], "override 'iterations=[1': line 1, column 3: invalid YAML"),
    (["--set", "iterations=2.5"], "iterations: expected an integer, got 2.5"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert cli.main(["-q", "study", "--preset", "tiny", "--set", "seeds=[]", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()  # nothing left behind that would refuse the corrected config


def test_bad_yaml_file_and_out_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("iterations: 3\nmethods: [sft,\n")
    assert cli.main(["study", "--config", str(bad), "--dry-run"]) == 2
    assert f"{bad}: line 3, column 1: invalid YAML" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.write_text("")
    assert cli.main(["-q", "study", "--preset", "tiny", "--set", "seeds=[]", "--out", str(afile)]) == 2
    assert "run directory" in capsys.readouterr().err and afile.read_text() == ""


def test_list_options_shows_the_values_in_force(capsys):
    assert cli.main(["study", "--preset", "tiny", "--set", "dpo_train.nll_weight=0.5", "--list-options"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("dpo_train.nll_weight = 0.5  # ") for line in lines)
    assert any(line.startswith("seeds = [0, 1, 2]  # ") for line in lines)
    assert any(line.startswith("m1_train.max_steps = 600  # ") for line in lines)
