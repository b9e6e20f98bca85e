"""A user's task in a study: named by 'module:Class' where it is not registered, its identity (name
and a digest of its problems) fixed on the first start, a resume with another task refused."""

import pytest
import yaml
from test_study_resume import EasySumTask, micro_config

from reversalkit.cli import build_parser, load_config
from reversalkit.study import Study
from reversalkit.tasks import REGISTRY, get_task
from reversalkit.tasks.registry import task_spec


class OtherSumTask(EasySumTask):
    """The same format, other train problems (`extra` repeated train problems)."""

    name = "othersum"

    def __init__(self, extra=1):
        super().__init__()
        self.extra = extra

    def load(self, split):
        problems = super().load(split)
        return problems + problems[:self.extra] if split == "train" else problems


@pytest.fixture
def easysum():
    yield
    REGISTRY.unregister("easysum")


def test_task_spec_and_import_path():
    assert task_spec(get_task("synthetic")) == "synthetic"
    spec = task_spec(OtherSumTask())
    assert spec == "test_study_task_identity:OtherSumTask"
    assert isinstance(get_task(spec), OtherSumTask)
    with pytest.raises(ValueError, match="cannot import module 'no_such_mod'"):
        get_task("no_such_mod:Task")
    with pytest.raises(ValueError, match="has no attribute 'Nope'"):
        get_task("test_study_task_identity:Nope")


@pytest.mark.timeout(300)
def test_task_object_is_recorded_and_a_changed_task_refused(tmp_path, easysum):
    cfg = micro_config(tmp_path / "r").with_overrides(["iterations=1"])
    results = Study(cfg, task=OtherSumTask(), print_summary=False).run()
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["task"] == results["task"] == "test_study_task_identity:OtherSumTask"
    assert saved["task_options"] == {}
    # the same task resumes; the same class with other problems is refused, with what changed
    Study(cfg, task=OtherSumTask(), print_summary=False).run()
    with pytest.raises(ValueError, match="another task or other problems") as info:
        Study(cfg, task=OtherSumTask(extra=2), print_summary=False).run()
    assert "problems:" in str(info.value)


def test_cli_task_override_drops_the_preset_task_options():
    args = build_parser().parse_args(["study", "--preset", "tiny", "--set", "task=mypkg.tasks:MyTask"])
    cfg = load_config(args)
    assert cfg.task == "mypkg.tasks:MyTask" and cfg.task_options == {}
    args = build_parser().parse_args(["study", "--preset", "tiny", "--set", "task=mypkg.tasks:MyTask",
                                      "--set", "task_options={size: 3}"])
    assert load_config(args).task_options == {"size": 3}
