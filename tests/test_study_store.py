"""Run store: atomic writes, manifest-driven resume, config change detection, --fresh, lock."""

import json
import os

import pytest

from reversalkit.study.store import RunLockedError, RunStore, config_diff


def test_create_write_resume(tmp_path):
    root = tmp_path / "run"
    cfg = {"a": 1, "nested": {"lr": 0.1}, "out_dir": str(root)}
    s = RunStore.open(root, cfg, ignore_keys=("out_dir",))
    s.write_json("nodes/m1/eval.json", {"x": 1})
    s.write_jsonl("nodes/m1/s.jsonl.gz", [{"i": 0}, {"i": 1}])
    s.mark_done("m1/train", seconds=1.0)
    s.close()
    # no temporary files left behind
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]
    s2 = RunStore.open(root, {**cfg, "out_dir": "elsewhere"}, ignore_keys=("out_dir",))
    assert s2.is_done("m1/train") and not s2.is_done("m1/eval")
    assert s2.read_json("nodes/m1/eval.json") == {"x": 1}
    assert s2.read_jsonl("nodes/m1/s.jsonl.gz") == [{"i": 0}, {"i": 1}]
    assert s2.config()["nested"] == {"lr": 0.1}
    s2.close()


def test_changed_config_is_an_error_unless_fresh(tmp_path):
    root = tmp_path / "run"
    RunStore.open(root, {"a": 1, "nested": {"lr": 0.1}}).close()
    with pytest.raises(ValueError, match=r"nested.lr: 0.1 -> 0.2") as err:
        RunStore.open(root, {"a": 1, "nested": {"lr": 0.2}})
    assert "--fresh" in str(err.value)
    s = RunStore.open(root, {"a": 1, "nested": {"lr": 0.2}}, fresh=True)
    assert s.steps() == {}
    s.close()


def test_refuses_foreign_directory(tmp_path):
    (tmp_path / "somefile.txt").write_text("not a run")
    with pytest.raises(ValueError, match="not a reversalkit run"):
        RunStore.open(tmp_path, {"a": 1})
    with pytest.raises(ValueError, match="not a reversalkit run"):
        RunStore.open(tmp_path, {"a": 1}, fresh=True)  # --fresh never deletes a foreign directory
    assert (tmp_path / "somefile.txt").exists()


def test_lock_excludes_a_second_writer(tmp_path):
    s = RunStore.open(tmp_path / "r", {"a": 1})
    with pytest.raises(RunLockedError):
        RunStore.open(tmp_path / "r", {"a": 1})
    s.close()
    RunStore.open(tmp_path / "r", {"a": 1}).close()


def test_failed_write_keeps_old_version(tmp_path):
    s = RunStore.open(tmp_path / "r", {"a": 1})
    s.write_json("x.json", {"v": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        s.write_json("x.json", {"v": Boom()})
    assert s.read_json("x.json") == {"v": 1}
    with pytest.raises(RuntimeError):
        with s.atomic_dir("ckpt") as tmp:
            (tmp / "w.bin").write_bytes(b"123")
            raise RuntimeError("killed mid-write")
    assert not s.exists("ckpt")
    with s.atomic_dir("ckpt") as tmp:
        (tmp / "w.bin").write_bytes(b"1")
    with s.atomic_dir("ckpt") as tmp:
        (tmp / "w.bin").write_bytes(b"2")
    assert s.path("ckpt/w.bin").read_bytes() == b"2"
    assert sorted(os.listdir(s.root)) == [".lock", "ckpt", "config.yaml", "manifest.json", "x.json"]
    s.close()


def test_artifact_hook_and_manifest_is_valid_json(tmp_path):
    seen = []
    s = RunStore.open(tmp_path / "r", {"a": 1})
    s.on_write = seen.append
    s.write_text("a.txt", "hi")
    s.mark_done("step")
    assert seen == ["a.txt"]
    assert "step" in json.loads((tmp_path / "r" / "manifest.json").read_text())["steps"]
    s.close()


def test_config_diff():
    assert config_diff({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}, "d": 4}) == [
        "b.c: 2 -> 3", "d: '<absent>' -> 4"]


def test_a_run_stored_in_an_older_layout_resumes_after_upgrade(tmp_path):
    root = tmp_path / "run"
    old = {"beta": 0.2, "dpo_train": {"lr": 1.0}}
    s = RunStore.open(root, old)
    s.mark_done("m1/train")
    s.close()
    new = {"dpo_train": {"lr": 1.0, "beta": 0.2}}

    def upgrade(d):
        d = dict(d)
        if "beta" in d:
            d["dpo_train"] = {**d["dpo_train"], "beta": d.pop("beta")}
        return d

    with pytest.raises(ValueError, match="different config"):
        RunStore.open(root, new)  # without the upgrade the layouts differ
    s = RunStore.open(root, new, upgrade=upgrade)
    assert s.is_done("m1/train") and s.config() == new
    s.close()
    s = RunStore.open(root, new)  # stored in the new layout now
    assert s.is_done("m1/train")
    s.close()
    with pytest.raises(ValueError, match="dpo_train.beta: 0.2 -> 0.3"):
        RunStore.open(root, {"dpo_train": {"lr": 1.0, "beta": 0.3}}, upgrade=upgrade)
