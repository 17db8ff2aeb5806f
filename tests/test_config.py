import json

import pytest

from specforge_het.config import ConfigError, RunConfig, resolve_config, run_entry, save_resolved_config


@pytest.fixture
def presets(tmp_path, monkeypatch):
    d = tmp_path / "presets"
    d.mkdir()
    (d / "p_one.yaml").write_text("description: first\ntraining:\n  learning_rate: 0.1\n  seed: 1\n")
    (d / "p_two.yaml").write_text("training:\n  learning_rate: 0.2\ndata:\n  max_length: 77\n")
    monkeypatch.setenv("SPECFORGE_HET_CONFIGS", str(d))
    from specforge_het.config import presets as p

    p._index.cache_clear()
    yield d
    p._index.cache_clear()


def test_defaults_without_arguments():
    cfg, presets = resolve_config([])
    assert cfg == RunConfig() and presets == []


def test_presets_compose_in_order_and_cli_wins(presets):
    cfg, _ = resolve_config(["--@p_one", "--@p_two"])
    assert cfg.training.learning_rate == 0.2 and cfg.training.seed == 1 and cfg.data.max_length == 77
    cfg, _ = resolve_config(["--@p_two", "--@p_one"])
    assert cfg.training.learning_rate == 0.1
    cfg, _ = resolve_config(["--training.learning_rate", "1e-4", "--@p_one", "--@p_two"])
    assert cfg.training.learning_rate == 1e-4  # overrides beat presets wherever they appear


def test_shipped_presets_resolve():
    cfg, _ = resolve_config(["--@demo", "--@eagle2"])
    assert cfg.algorithm.name == "eagle2"


def test_unknown_preset_names_closest(presets):
    with pytest.raises(ConfigError, match="did you mean '@?p_one'|did you mean 'p_one'"):
        resolve_config(["--@p_onee"])


def test_unknown_key_and_section_name_closest():
    with pytest.raises(ConfigError, match="learning_rate"):
        resolve_config(["--training.learning_rat", "1"])
    with pytest.raises(ConfigError, match="training"):
        resolve_config(["--trainig.seed", "1"])


def test_literals_parsed_never_evaluated():
    cfg, _ = resolve_config(["--base.model_name_or_path", "__import__('os').system('echo hi')",
                             "--data.max_samples", "None", "--modeling.draft_config_overrides", "{'a': 1}",
                             "--base.trust_remote_code", "false", "--training.learning_rate", "3e-5"])
    assert cfg.base.model_name_or_path == "__import__('os').system('echo hi')"
    assert cfg.data.max_samples is None
    assert cfg.modeling.draft_config_overrides == {"a": 1}
    assert cfg.base.trust_remote_code is False
    assert cfg.training.learning_rate == 3e-5


def test_type_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"training\.seed.*expected int"):
        resolve_config(["--training.seed", "abc"])
    with pytest.raises(ConfigError, match="needs a value"):
        resolve_config(["--training.seed"])


def test_preset_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  nope: 1\n")
    with pytest.raises(ConfigError, match="bad.yaml.*training.nope"):
        resolve_config([f"--@{bad}"])


def test_json_round_trip_and_overrides_still_apply(tmp_path, presets):
    cfg, names = resolve_config(["--@p_one", "--data.max_length", "99"])
    path = save_resolved_config(cfg, tmp_path / "run", "train", names)
    saved = json.loads(path.read_text())
    assert saved["config"]["training"]["learning_rate"] == 0.1
    again, _ = resolve_config(["--use_saved_json_config", str(path)])
    assert again == cfg
    again, _ = resolve_config(["--use_saved_json_config", str(tmp_path / "run"), "--training.seed", "5"])
    assert again.training.seed == 5 and again.data.max_length == 99


def test_help_lists_sections_and_presets(capsys, presets):
    assert run_entry("train", "summary line", lambda c, p: 1 / 0, ["--help"]) is None
    out = capsys.readouterr().out
    assert "--@p_one" in out and "first" in out and "--training.learning_rate" in out and "[inference]" in out


def test_config_error_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        run_entry("train", "s", lambda c, p: None, ["--training.nope", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training.nope" in err


@pytest.mark.parametrize("flag,value,expected", [
    ("--data.max_length", "-5", "2 ≤ max_length"),
    ("--data.max_samples", "0", "1 ≤ max_samples"),
    ("--data.max_samples", "-1", "1 ≤ max_samples"),
    ("--data.shard_size", "0", "1 ≤ shard_size"),
    ("--data.ds_range", "['a','b']", "ds_range.*item 0: expected int"),
    ("--data.ds_range", "[5, 2]", "0 <= a <= b"),
    ("--training.learning_rate", "-0.001", "0 < learning_rate"),
    ("--training.per_device_train_batch_size", "0", "1 ≤ per_device_train_batch_size"),
    ("--inference.top_p", "1.5", "top_p ≤ 1"),
    ("--inference.temperature", "nan", "expected float"),
    ("--export.to", "sglng", "one of specforge_het, sglang, vllm.*did you mean 'sglang'"),
    ("--base.dtype", "fp32", "one of float32, bfloat16, float16"),
    ("--inference.strategy", "trees", "did you mean 'tree'"),
])
def test_out_of_range_and_unknown_choice_values_stop_at_load(flag, value, expected):
    """Values that used to be accepted silently (max_length −5 cut every sample, max_samples ≤ 0 kept one, a
    negative learning rate failed deep in torch) stop at config load with the key and what was expected."""
    with pytest.raises(ConfigError, match=expected):
        resolve_config([flag, value])


def test_help_lists_every_choice_and_range(capsys):
    run_entry("export", "summary", lambda c, p: None, ["--help"])
    out = capsys.readouterr().out
    assert "--export.to (one of specforge_het | sglang | vllm, default 'specforge_het')" in out
    assert "--inference.top_p (float, 0 < top_p ≤ 1, default 1.0)" in out
    assert "--data.ds_range (list of int or None, default None)" in out
