"""The keys that strategies and attacks declare next to their formulas."""

import re
from pathlib import Path

import numpy as np
import pytest

from attacks import ipm, sign_flip
from attacks.errors import AttackParameterError, UnknownAttackError
from attacks.registry import AttackKind, craft_byzantine_updates, get_attack, register_attack
from fl_app.config import (
    DECLARED,
    DEFAULTS,
    params_table,
    parse_run_config,
    stored_config,
    with_overrides,
)
from fl_app.errors import ConfigErrors
from fl_app.federation.roles import omniscient_hook
from fl_app.privacy import DPSettings
from fl_app.runs.layout import config_differences
from fl_app.task import TrainSettings
from strategies.params import Param, check_declared_keywords, non_negative_finite
from strategies.registry import make_strategy

README = Path(__file__).resolve().parents[3] / "README.md"


def test_each_declared_key_is_method_dash_param_with_its_default():
    assert DECLARED["ipm-epsilon"].param is ipm.EPSILON
    assert DECLARED["sign-flip-scale"].param is sign_flip.SCALE
    assert DECLARED["multikrum-m"].method == "multikrum"
    for key, declared in DECLARED.items():
        assert key == f"{declared.method}-{declared.param.name}"
        assert DEFAULTS[key] == declared.param.default


def test_the_readme_table_is_the_generated_one():
    assert params_table() in README.read_text()
    assert params_table().count("\n") == len(DECLARED) + 1  # header, rule, one row per key


def test_a_declared_key_is_validated_by_its_rule_and_type():
    with pytest.raises(ConfigErrors) as info:
        parse_run_config({"ipm-epsilon": -1.0, "multikrum-m": 1.5, "gaussian-sigma": "big"})
    problems = {e.key: str(e) for e in info.value.errors}
    assert set(problems) == {"ipm-epsilon", "multikrum-m", "gaussian-sigma"}
    assert "a finite number >= 0" in problems["ipm-epsilon"]
    assert "an integer" in problems["multikrum-m"]
    assert "a number" in problems["gaussian-sigma"]


def test_values_reach_the_method_they_belong_to():
    cfg = parse_run_config({"attack": "sign-flip", "num-attackers": 1, "sign-flip-scale": 3.0,
                            "ipm-epsilon": 7.0, "strategy": "multikrum", "multikrum-m": 4})
    assert cfg.attack_settings.params == {"scale": 3.0}  # ipm-epsilon is IPM's, not used here
    assert cfg.strategy_params == {"m": 4}
    assert make_strategy(cfg.strategy, num_byzantine=1, params=cfg.strategy_params
                         ).num_selected == 4
    assert parse_run_config({"strategy": "krum"}).strategy_params == {}


def test_the_omniscient_hook_crafts_with_the_declared_value():
    cfg = parse_run_config({"attack": "sign-flip", "num-attackers": 1, "sign-flip-scale": 3.0,
                            "attack-knowledge": "omniscient"})
    hook = omniscient_hook(cfg)
    updates = np.array([[1.0, -2.0], [0.5, 0.5], [2.0, 2.0]], dtype=np.float32)
    corrupted, rows = hook(1, updates, [{}] * 3)
    (row,) = rows
    first_honest = updates[next(i for i in range(3) if i != row)]
    assert np.array_equal(corrupted[row], -3.0 * first_honest)  # it flips honest row 0


def test_alie_gets_the_round_size_as_context_not_as_a_key():
    cfg = parse_run_config({"attack": "alie", "num-attackers": 2})
    assert cfg.attack_settings.crafting_params(num_clients=10) == {"num_clients": 10}
    assert cfg.attack_settings.crafting_params() == {}
    assert not any(key.startswith("alie-") for key in DECLARED)


def test_a_declaration_that_does_not_match_the_function_is_refused_at_registration():
    def craft(updates, q, rng, *, strength: float = 2.0):
        return updates

    with pytest.raises(AttackParameterError, match="'strength' is neither declared"):
        register_attack("test-undeclared", AttackKind.UPDATE, craft, "x")
    wrong_default = r"defaults to 2\.0 in craft but is declared with 1\.0"
    with pytest.raises(AttackParameterError, match=wrong_default):
        register_attack("test-wrong-default", AttackKind.UPDATE, craft, "x",
                        params=(Param("strength", 1.0, "s"),))
    with pytest.raises(ValueError, match="'power' is no keyword of craft"):
        check_declared_keywords("x", craft, (Param("strength", 2.0, "s"),
                                             Param("power", 1.0, "p")))
    with pytest.raises(UnknownAttackError):
        get_attack("test-undeclared")  # nothing half-registered


def test_a_param_whose_default_breaks_its_rule_or_name_is_refused():
    with pytest.raises(ValueError, match="breaks its own rule"):
        Param("epsilon", -1.0, "e", non_negative_finite)
    with pytest.raises(ValueError, match="kebab-case"):
        Param("z_max", 0.0, "z")
    assert Param("z-max", 0.0, "z").kwarg == "z_max"


def test_crafting_uses_the_declared_default_when_no_value_is_given():
    honest = np.array([[2.0, 4.0]])
    crafted = craft_byzantine_updates("ipm", honest, 1, np.random.default_rng(0))
    assert np.array_equal(crafted, -ipm.EPSILON.default * honest)


def test_a_renamed_key_is_an_error_naming_the_new_key():
    with pytest.raises(ConfigErrors) as info:
        parse_run_config({"ipm-knowledge": "colluders"})
    (error,) = info.value.errors
    assert error.key == "ipm-knowledge" and "attack-knowledge='colluders'" in str(error)


def test_a_stored_config_with_an_old_key_is_the_same_run():
    cfg = parse_run_config({"attack": "ipm", "num-attackers": 1, "attack-knowledge": "colluders"})
    old = {**cfg.as_dict(), "ipm-knowledge": "colluders"}
    del old["attack-knowledge"]
    del old["sign-flip-scale"]  # a key added since: read as its default
    assert stored_config(old)["attack-knowledge"] == "colluders"
    assert config_differences(old, cfg.as_dict()) == {}
    other = with_overrides(cfg, attack_knowledge="own")
    assert config_differences(old, other.as_dict()) == {"attack-knowledge": ("colluders", "own")}


def test_local_training_and_dp_defaults_have_one_definition():
    cfg = parse_run_config({})
    assert cfg.train == TrainSettings()
    assert cfg.dp_settings == DPSettings()
    assert DEFAULTS["learning-rate"] == TrainSettings().learning_rate


def test_dp_keys_are_checked_once_by_dp_settings_even_with_dp_off():
    with pytest.raises(ConfigErrors) as info:
        parse_run_config({"dp": False, "dp-noise-multiplier": -1.0, "dp-accountant": "gdp"})
    assert {e.key for e in info.value.errors} == {"dp-noise-multiplier", "dp-accountant"}
    assert len(info.value.errors) == 2  # not once per layer that used to check them


def test_sub_settings_are_built_once():
    cfg = parse_run_config({"dp": True})
    assert cfg.dp_settings is cfg.dp_settings and cfg.train is cfg.train


def test_every_declared_help_fits_a_table_cell():
    for declared in DECLARED.values():
        assert declared.param.help and not re.search(r"[|\n]", declared.param.help)
