import tomllib
from pathlib import Path

import pytest

from fl_app.config import KEYS, RunConfig, parse_run_config
from fl_app.errors import ConfigError, ConfigErrors

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def app_config() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]


def test_pyproject_declares_every_key_with_the_dataclass_default():
    declared = app_config()
    assert set(declared) == set(KEYS)
    defaults = RunConfig().as_dict()
    for key, value in declared.items():
        assert value == defaults[key], key
        assert type(value) is type(defaults[key]), key


def test_pyproject_defaults_parse():
    cfg = parse_run_config(app_config())
    assert cfg == RunConfig()
    assert cfg.model_name == "digits-cnn"


@pytest.mark.parametrize("key, value, fragment", [
    ("dataset", "imagenet", "'cifar10', 'digits', 'fashion-mnist', 'mnist'"),
    ("model", "resnet", "'auto', 'cifar-cnn', 'digits-cnn', 'mnist-cnn'"),
    ("partitioning", "natural", "['iid', 'dirichlet', 'pathological', 'shard', "
                         "'inner-dirichlet']"),
    ("strategy", "dnc", "'fedavg', 'geometric-median', 'krum'"),
    ("attack", "trojan", "'ipm'"),
    ("attack-knowledge", "telepathy", "['own', 'colluders', 'omniscient']"),
    ("fraction-fit", 0.0, "(0, 1]"),
    ("fraction-fit", 1.5, "(0, 1]"),
    ("num-server-rounds", 0, ">= 1"),
    ("batch-size", 2.5, "an integer"),
    ("dp", "maybe", "true or false"),
    ("learning-rate", "fast", "a number"),
    ("dp-noise-multiplier", 0.0, "> 0"),
    ("dp-max-grad-norm", -1.0, "> 0"),
    ("dp-delta", 1.0, "(0, 1)"),
    ("dp-accountant", "gdp", "'rdp'"),
    ("lr", 0.1, "a known key"),
    ("pre-aggregation", "nnm,mixing", "['arc', 'bucketing', 'clipping', 'nnm']"),
    ("server-momentum", 1.0, "[0, 1)"),
    ("server-learning-rate", 0.0, "> 0"),
    ("bucketing-size", 0, ">= 1"),
    ("centered-clipping-tau", -1.0, "> 0"),
])
def test_bad_values_name_the_key_and_the_allowed_values(key, value, fragment):
    with pytest.raises(ConfigErrors) as info:
        parse_run_config({key: value})
    message = str(info.value)
    assert repr(key) in message and fragment in message


def test_several_errors_are_reported_together():
    with pytest.raises(ConfigErrors) as info:
        parse_run_config({"dataset": "imagenet", "strategy": "dnc", "momentum": 2.0})
    assert {e.key for e in info.value.errors} == {"dataset", "strategy", "momentum"}


def test_model_that_does_not_fit_the_data():
    with pytest.raises(ConfigErrors) as info:
        parse_run_config({"dataset": "digits", "model": "cifar-cnn"})
    (error,) = info.value.errors
    assert error.key == "model" and "digits-cnn" in str(error) and "(3, 32, 32)" in str(error)


def test_missing_data_dir_is_refused_at_start(tmp_path):
    with pytest.raises(ConfigErrors) as info:
        parse_run_config({"dataset": "cifar10", "data-dir": str(tmp_path / "nowhere")})
    assert info.value.errors[0].key == "data-dir" and "ImageFolder" in str(info.value)


def test_attack_combinations():
    with pytest.raises(ConfigErrors, match="num-attackers"):
        parse_run_config({"attack": "ipm", "num-attackers": 0})
    with pytest.raises(ConfigErrors, match=r"'attack-knowledge' = 'omniscient'.*one of "
                                           r"\['own', 'colluders'\] with attack='label-flip'"):
        parse_run_config({"attack": "label-flip", "num-attackers": 1,
                          "attack-knowledge": "omniscient"})
    with pytest.raises(ConfigErrors, match="with attack='min-max'"):
        parse_run_config({"attack": "min-max", "num-attackers": 1})  # own: one update only
    with pytest.raises(ConfigErrors, match="never start"):
        parse_run_config({"attack": "ipm", "num-attackers": 1, "num-server-rounds": 3,
                          "attack-start-round": 4})


def test_config_error_is_a_value_error_with_fields():
    err = ConfigError("dataset", "x", "one of ['digits']")
    assert isinstance(err, ValueError) and err.key == "dataset"
