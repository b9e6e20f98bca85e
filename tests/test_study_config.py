"""StudyConfig: presets, YAML, overrides, validation messages, derived values."""

import re

import pytest

from reversalkit.study import stages
from reversalkit.study.config import StudyConfig, preset_names, upgrade_config


def test_presets_load_and_differ():
    assert {"tiny", "gsm8k"} <= set(preset_names())
    tiny, gsm = StudyConfig.preset("tiny"), StudyConfig.preset("gsm8k")
    assert tiny.model == "tiny" and tiny.iterations == 5
    assert set(tiny.methods) == {"sft", "dpo", "gold"} and tiny.seeds == (0, 1, 2)
    assert tiny.sample_size is None and tiny.samples_per_problem == 4 and tiny.dpo_train.nll_weight == 2.0
    assert (gsm.samples_per_problem, gsm.temperature, gsm.top_p) == (50, 0.75, 0.95)
    assert gsm.ood_tasks == ("math:test",)
    with pytest.raises(ValueError, match="unknown preset 'nope'.*tiny"):
        StudyConfig.preset("nope")


def test_yaml_roundtrip_and_overrides(tmp_path):
    cfg = StudyConfig.preset("tiny")
    path = tmp_path / "s.yaml"
    path.write_text(cfg.to_yaml())
    assert StudyConfig.from_yaml(path) == cfg
    c2 = cfg.with_overrides(["iterations=3", "sft_train.lr=2e-4", "methods=[dpo]", "pairs_per_problem=2",
                             "task_options={train_size: 50}"])
    assert c2.iterations == 3 and c2.sft_train.lr == 2e-4 and c2.methods == ("dpo",)
    assert c2.pairs_per_problem == 2 and c2.task_options == {"train_size": 50}
    with pytest.raises(ValueError, match="unknown key 'iteratons'"):
        cfg.with_overrides(["iteratons=3"])


def test_dotted_overrides_reach_into_mapping_fields():
    cfg = StudyConfig.preset("tiny")
    c2 = cfg.with_overrides(["task_options.train_size=400", "task_options.shots=2",
                             "ood_task_options.gsm8k.split=test"])
    assert c2.task_options == {**cfg.task_options, "train_size": 400, "shots": 2}
    assert c2.ood_task_options == {"gsm8k": {"split": "test"}}
    with pytest.raises(ValueError, match="unknown key 'm1_train.nope'"):
        cfg.with_overrides(["m1_train.nope=1"])
    with pytest.raises(ValueError, match="'iterations' is not a nested config or mapping"):
        cfg.with_overrides(["iterations.x=1"])


@pytest.mark.parametrize("change, message", [
    ({"methods": ["sft", "ppo"]}, "unknown method"),
    ({"iterations": 0}, "iterations must be >= 1"),
    ({"reference": "m0"}, "reference must be one of"),
    ({"init": "restart"}, "init must be one of"),
    ({"sft_selection": "best"}, "sft_selection"),
    ({"top_p": 0}, "top_p"),
    ({"temperature": 0}, "temperature must be > 0"),
    ({"loss_type": "kto"}, "loss_type"),
    ({"pairs_per_problem": 0}, "pairs_per_problem must be >= 1"),
    ({"device": "tpu"}, "device must be"),
    ({"pass_k": [0, 2]}, "pass_k"),
    ({"ood_tasks": ["math:"]}, "ood_tasks"),
])
def test_validation_messages(change, message):
    with pytest.raises(ValueError, match=message):
        StudyConfig.from_dict({**StudyConfig().to_dict(), **change})


def test_derived_values():
    cfg = StudyConfig(iterations=4, eval_samples=4, pass_k=(1, 2, 4, 8))
    assert cfg.ks == (1, 2, 4)
    assert cfg.round_kinds("sft_dpo") == ["sft", "dpo", "sft"]
    assert cfg.round_kinds("dpo") == ["dpo"] * 3
    assert "out_dir" not in cfg.result_dict()


def test_every_field_documented():
    lines = StudyConfig.help_lines()
    undocumented = [ln for ln in lines if ln.rstrip().endswith(":")]
    assert not undocumented, undocumented
    assert any(ln.startswith("sft_train.lr") for ln in lines)


def test_sbert_batch_defaults_to_the_sentence_models_device():
    from types import SimpleNamespace

    from reversalkit.study import stages

    assert StudyConfig().sbert_batch_size is None
    assert stages.sbert_batch_size(SimpleNamespace(device="cuda:0")) == 256
    assert stages.sbert_batch_size(SimpleNamespace(device="cpu")) == 64
    with pytest.raises(ValueError, match="sbert_batch_size"):
        StudyConfig(sbert_batch_size=0)


@pytest.mark.parametrize("override, message", [
    ("iterations=2.5", "iterations: expected an integer, got 2.5"),
    ("sft_train.lr=abc", "sft_train.lr: expected a number, got 'abc'"),
    ("seeds=[0, 1.5]", "seeds: expected an integer, got 1.5"),
    ("num_threads=two", "num_threads: expected an integer or null, got 'two'"),
    ("progress=maybe", "progress: expected true/false, got 'maybe'"),
    ("task_options=5", "task_options: expected a mapping"),
    ("max_new_tokens=true", "max_new_tokens: expected an integer, got True"),
])
def test_values_of_the_wrong_type_name_the_key(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        StudyConfig.preset("tiny").with_overrides([override])


def test_unambiguous_values_convert():
    cfg = StudyConfig.preset("tiny").with_overrides(["iterations=3.0", "sft_train.lr=3e-4",
                                                     "sample_size=null", "dpo_train.autocast_bf16=on",
                                                     "seeds=[]"])
    assert cfg.iterations == 3 and isinstance(cfg.iterations, int) and cfg.sft_train.lr == 3e-4
    assert cfg.sample_size is None and cfg.dpo_train.autocast_bf16 == "on" and cfg.seeds == ()


@pytest.mark.parametrize("key, value", [("beta", "0.2"), ("loss_type", "ipo"), ("nll_weight", "0.5")])
def test_dpo_knobs_live_in_dpo_train_only(key, value):
    cfg = StudyConfig.preset("tiny").with_overrides([f"dpo_train.{key}={value}"])
    assert str(getattr(cfg.dpo_train, key)) == value
    assert str(getattr(stages.round_train_config(cfg, "dpo", "dpo/2"), key)) == value
    with pytest.raises(ValueError, match=f"{key} belongs to dpo_train; use --set dpo_train.{key}={value}"):
        StudyConfig.preset("tiny").with_overrides([f"{key}={value}"])
    with pytest.raises(ValueError, match=f"config key.*{key} belong to dpo_train"):
        StudyConfig.from_dict({key: value})


@pytest.mark.parametrize("key", ["beta", "label_smoothing", "nll_weight", "share_prompt", "loss_type"])
def test_sft_configs_have_no_dpo_keys(key):
    lines = StudyConfig.help_lines()
    assert not [ln for ln in lines for part in ("m1_train", "sft_train") if re.match(rf"{part}\.{key}\b", ln)]
    assert [ln for ln in lines if re.match(rf"dpo_train\.{key}\b", ln)]
    with pytest.raises(ValueError, match=f"unknown key 'sft_train.{key}'"):
        StudyConfig.preset("tiny").with_overrides([f"sft_train.{key}=1"])


def test_a_config_stored_by_an_earlier_version_upgrades():
    """A run directory written when beta / loss_type / nll_weight were study-level keys and every
    training config listed the DPO keys still loads, with the same values."""
    new = StudyConfig.preset("tiny").to_dict()
    old = {k: v for k, v in new.items()}
    dpo = dict(old.pop("dpo_train"))
    for key in ("beta", "loss_type", "nll_weight"):
        old[key] = dpo[key]
        dpo[key] = {"beta": 0.1, "loss_type": "sigmoid", "nll_weight": 0.0}[key]  # old defaults inside
    old["dpo_train"] = dpo
    for part in ("m1_train", "sft_train"):
        old[part] = {**old[part], "beta": 0.1, "loss_type": "sigmoid", "label_smoothing": 0.0,
                     "nll_weight": 0.0, "share_prompt": True}
    assert StudyConfig.from_stored(old) == StudyConfig.preset("tiny")
    assert upgrade_config(old) == new
    conflict = f"nll_weight={old['nll_weight']} conflicts with dpo_train.nll_weight=0.5"
    with pytest.raises(ValueError, match=conflict):
        upgrade_config({**old, "dpo_train": {**dpo, "nll_weight": 0.5}})


def test_keys_added_since_a_run_was_stored_take_the_value_that_reproduces_it(tmp_path):
    """A run stored before m1_is_samples and data_parallel existed resumes under today's config with
    them at the values that reproduce it, and only at those."""
    from reversalkit.study.config import NON_RESULT_KEYS
    from reversalkit.study.store import RunStore

    now = StudyConfig.preset("tiny").replace(m1_is_samples=0).to_dict()
    old = {k: v for k, v in now.items() if k != "m1_is_samples"}
    for part in ("m1_train", "sft_train", "dpo_train"):
        old[part] = {k: v for k, v in old[part].items() if k != "data_parallel"}
    assert upgrade_config(old) == now
    RunStore.open(tmp_path / "run", old).close()
    RunStore.open(tmp_path / "run", now, ignore_keys=NON_RESULT_KEYS, upgrade=upgrade_config).close()
    with pytest.raises(ValueError, match="m1_is_samples: 0 -> 64"):
        RunStore.open(tmp_path / "run", {**now, "m1_is_samples": 64}, ignore_keys=NON_RESULT_KEYS,
                      upgrade=upgrade_config)
