"""The ``preset`` run-config key: resolved before validation, the same on server and clients."""

import json
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from fl_app.config import DEFAULTS, apply_preset, parse_run_config, preset, with_overrides
from fl_app.errors import ConfigError, ConfigErrors
from fl_app.experiments.simulate import simulate

pytestmark = pytest.mark.usefixtures("shared_engine")  # one Ray for the module's runs

REPO = Path(__file__).resolve().parents[3]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
FLOWER_DEFAULTS = PYPROJECT["tool"]["flwr"]["app"]["config"]
SEED = preset.load_preset("seed-krum-ipm")


def merged(**user):
    """What Flower hands the app: the pyproject defaults, then the user's --run-config."""
    return {**FLOWER_DEFAULTS, **{k.replace("_", "-"): v for k, v in user.items()}}


def test_presets_load_by_path_or_shipped_name(tmp_path):
    small = preset.load_preset("seed-krum-ipm-small")
    assert small["dataset"] == "digits" and small["num-byzantine"] == -1
    assert preset.load_preset(REPO / "fl_app/config/presets/seed-krum-ipm.toml") == SEED
    assert {"seed-krum-ipm", "seed-krum-ipm-small"} <= set(preset.preset_names())
    with pytest.raises(ConfigError, match="seed-krum-ipm-small"):
        preset.load_preset(tmp_path / "missing.toml")
    (tmp_path / "nested.toml").write_text("[tool]\nx = 1\n")
    with pytest.raises(ConfigError, match="tables or arrays"):
        preset.load_preset(tmp_path / "nested.toml")
    (tmp_path / "chained.toml").write_text("preset = 'seed-krum-ipm'\nseed = 3\n")
    with pytest.raises(ConfigError, match="does not name another preset"):
        preset.load_preset(tmp_path / "chained.toml")


def test_preset_values_replace_defaults_and_lose_to_what_the_user_changed():
    cfg = parse_run_config(merged(preset="seed-krum-ipm", num_attackers=5, learning_rate=0.2))
    config = cfg.as_dict()
    for key, value in SEED.items():
        expected = {"num-attackers": 5, "learning-rate": 0.2}.get(key, value)
        assert config[key] == expected, key
    assert cfg.learning_rate == 0.2  # the preset says 0.01; the user's value wins
    assert cfg.preset == "seed-krum-ipm"  # recorded with the resolved values
    assert cfg.declared_byzantine == 5  # Krum's f = q


def test_no_preset_changes_nothing():
    assert apply_preset(merged(seed=3)) == merged(seed=3)
    assert parse_run_config(merged()) == parse_run_config({})


def test_server_and_clients_resolve_the_same_run():
    """The server sees the keys given to flwr run; a client only the merged config."""
    user = {"preset": "seed-krum-ipm", "num-attackers": 7, "data-dir": ""}
    assert (parse_run_config(merged(**user), server_only=user)
            == parse_run_config(merged(**user)))


def test_overrides_both_apps_know_beat_the_preset_even_at_their_default():
    """simulate() binds its overrides into server and clients: q = 0 stays 0."""
    user = {"preset": "seed-krum-ipm", "num-attackers": 0, "attack": "none"}
    cfg = parse_run_config(merged(**user), user)
    assert cfg.num_attackers == 0 and cfg.attack == "none" and cfg.num_server_rounds == 50
    assert with_overrides(cfg, seed=1) == replace(cfg, seed=1)  # re-parsing keeps it


@pytest.mark.parametrize("user", [{"attack": "none"}, {"num-attackers": 0, "attack": "none"},
                                  {"num-server-rounds": DEFAULTS["num-server-rounds"]}])
def test_a_key_given_at_its_default_next_to_a_preset_is_ambiguous(user):
    """The clients would read it as unset; the server refuses the run, naming each key."""
    given = {"preset": "seed-krum-ipm", **user}
    with pytest.raises(ConfigErrors) as info:
        parse_run_config(merged(**given), server_only=given)
    assert {e.key for e in info.value.errors} == set(user)
    assert "fl-sweep --preset" in str(info.value)


def test_a_key_at_the_presets_own_value_is_not_ambiguous():
    given = {"preset": "seed-krum-ipm", "strategy": "krum", "seed": 0}  # seed 0: both agree
    assert parse_run_config(merged(**given), server_only=given).strategy == "krum"


@pytest.mark.parametrize(("text", "why"), [("no-such-key = 1\n", "Unknown keys"),
                                           ("num-server-rounds = 0\n", "num-server-rounds")])
def test_a_bad_preset_file_is_a_config_error(tmp_path, text, why):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ConfigErrors, match=why):
        parse_run_config(merged(preset=str(path)))


def test_an_unknown_preset_name_lists_the_shipped_ones():
    with pytest.raises(ConfigErrors) as info:
        parse_run_config(merged(preset="seed-krum"))
    assert "'preset' = 'seed-krum'" in str(info.value)
    assert "seed-krum-ipm-small" in str(info.value)


def test_a_simulation_runs_the_preset(tmp_path):
    run = simulate({"preset": "seed-krum-ipm-small", "num-server-rounds": 1,
                    "attack-start-round": 1, "num-attackers": 2,  # 1 is the default: kept
                    "output-dir": str(tmp_path)}, num_supernodes=10)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished"
    config = summary["config"]
    assert config["preset"] == "seed-krum-ipm-small" and config["partitioning"] == "dirichlet"
    assert config["strategy"] == "krum" and config["num-attackers"] == 2
    assert summary["declared_byzantine"] == 2
