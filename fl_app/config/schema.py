"""The run configuration: every knob, its type, its allowed values, checked in one place.

Defaults live in ``pyproject.toml`` under ``[tool.flwr.app.config]`` (Flower's
place for them, overridable with ``flwr run . --run-config ...``); this module
declares each key's type and rule. A test keeps the two in step.

:func:`parse_run_config` turns Flower's flat ``run_config`` mapping into a
:class:`RunConfig` and reports every bad value at once (:class:`ConfigErrors`),
before any data is loaded or any round is run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from attacks.registry import AttackKind, attack_names, get_attack
from fl_app.config.preset import KEY_PRESET, load_preset
from fl_app.errors import ConfigError, ConfigErrors
from fl_app.learning.data import DATASETS, PARTITIONINGS, DataConfig
from fl_app.learning.models import MODELS, check_model_fits
from fl_app.privacy import DEFAULT_GRAD_SAMPLE_MODE, GRAD_SAMPLE_MODES, accountant_names
from fl_app.privacy.randomness import NOISE_SOURCES, resolve_noise_source
from strategies.registry import strategy_names

IPM_KNOWLEDGE = ("own", "colluders", "omniscient")
# Keys that say where a run writes and whether it continues there; they never change what
# it computes (a resumed run, a sweep's cells and its reports compare runs without them).
PLACEMENT_KEYS = ("output-dir", "run-name", "resume")


@dataclass(frozen=True)
class RunConfig:
    """A validated run configuration; field ``foo_bar`` is run-config key ``foo-bar``."""

    preset: str = ""
    seed: int = 0
    num_server_rounds: int = 20
    fraction_fit: float = 0.5
    fraction_evaluate: float = 0.0
    dataset: str = "digits"
    data_dir: str = ""
    model: str = "auto"
    partitioning: str = "iid"
    dirichlet_alpha: float = 0.5
    local_epochs: int = 1
    batch_size: int = 10
    learning_rate: float = 0.05
    momentum: float = 0.5
    client_threads: int = 1
    strategy: str = "fedavg"
    num_byzantine: int = 0
    multikrum_m: int = 0
    accept_failures: int = -1
    max_update_norm: float = 1e6
    attack: str = "none"
    num_attackers: int = 0
    ipm_epsilon: float = 1.0
    ipm_knowledge: str = "own"
    attack_start_round: int = 1
    dp: bool = False
    dp_noise_multiplier: float = 1.0
    dp_max_grad_norm: float = 1.0
    dp_target_epsilon: float = 0.0
    dp_delta: float = 0.0
    dp_accountant: str = "rdp"
    dp_max_epsilon: float = 0.0
    dp_grad_sample_mode: str = DEFAULT_GRAD_SAMPLE_MODE
    dp_noise_source: str = "auto"
    dp_secure_mode: bool = False
    output_dir: str = ""
    run_name: str = ""
    resume: bool = False

    @property
    def data(self) -> DataConfig:
        """The part of the config that decides which examples a partition holds."""
        return DataConfig(self.dataset, self.data_dir, self.partitioning,
                          float(self.dirichlet_alpha), self.seed)

    @property
    def model_name(self) -> str:
        """The model to train: ``model``, or the dataset's default when ``model = 'auto'``."""
        return DATASETS[self.dataset].default_model if self.model == "auto" else self.model

    @property
    def omniscient(self) -> bool:
        """True when the server-side omniscient adversary attacks (a simulation only)."""
        return self.attack != "none" and self.ipm_knowledge == "omniscient"

    @property
    def declared_byzantine(self) -> int:
        """The f the defence declares: ``num-byzantine``, or ``num-attackers`` when it is -1."""
        return self.num_attackers if self.num_byzantine == -1 else self.num_byzantine

    def as_dict(self) -> dict[str, Any]:
        """Return the config keyed by run-config key (kebab-case), as written to summary.json."""
        return {key_of(f.name): getattr(self, f.name) for f in fields(self)}


def key_of(field_name: str) -> str:
    """Return the run-config key of a :class:`RunConfig` field (``num_server_rounds`` ...)."""
    return field_name.replace("_", "-")


KEYS = {key_of(f.name): f for f in fields(RunConfig)}
DEFAULTS = {key: f.default for key, f in KEYS.items()}


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Coerce a run-config value to the type of the field's default, or raise."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(key, value, "true or false")
    if kind is int:
        if isinstance(value, bool) or not (isinstance(value, int)
                                           or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(key, value, "an integer")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, value, "a number")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(key, value, "a string")
    return value


def _one_of(allowed: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"one of {list(allowed)}"


def _at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"a number >= {low}"


def _fraction(v: float) -> str | None:
    return None if 0.0 < v <= 1.0 else "a number in (0, 1]"


def _non_negative_finite(v: float) -> str | None:
    return None if v >= 0 and math.isfinite(v) else "a finite number >= 0"


# One rule per key whose values are restricted beyond their type.
RULES: dict[str, Callable[[Any], str | None]] = {
    "num-server-rounds": _at_least(1),
    "fraction-fit": _fraction,
    "fraction-evaluate": lambda v: None if 0.0 <= v <= 1.0 else "a number in [0, 1]",
    "dataset": _one_of(tuple(sorted(DATASETS))),
    "model": _one_of(("auto", *sorted(MODELS))),
    "partitioning": _one_of(PARTITIONINGS),
    "dirichlet-alpha": lambda v: None if v > 0 else "a number > 0",
    "local-epochs": _at_least(1),
    "batch-size": _at_least(1),
    "learning-rate": lambda v: None if v > 0 and math.isfinite(v) else "a finite number > 0",
    "momentum": lambda v: None if 0.0 <= v < 1.0 else "a number in [0, 1)",
    "client-threads": _at_least(1),
    "strategy": _one_of(tuple(strategy_names())),
    "num-byzantine": lambda v: None if v >= -1 else "an integer >= 0, or -1 for num-attackers",
    "multikrum-m": _at_least(0),
    "accept-failures": lambda v: None if v >= -1 else "an integer >= 0, or -1 for any number",
    "max-update-norm": lambda v: None if v >= 0 else "a number > 0, or 0 for no limit",
    "attack": _one_of(attack_names()),
    "num-attackers": _at_least(0),
    "ipm-epsilon": _non_negative_finite,
    "ipm-knowledge": _one_of(IPM_KNOWLEDGE),
    "attack-start-round": _at_least(1),
    "dp-noise-multiplier": lambda v: None if v > 0 else "a number > 0",
    "dp-max-grad-norm": lambda v: None if v > 0 else "a number > 0",
    "dp-target-epsilon": _non_negative_finite,
    "dp-delta": lambda v: None if 0.0 <= v < 1.0 else "0 (automatic) or a number in (0, 1)",
    "dp-accountant": _one_of(tuple(accountant_names())),
    "dp-max-epsilon": _non_negative_finite,
    "dp-grad-sample-mode": _one_of(tuple(sorted(GRAD_SAMPLE_MODES))),
    "dp-noise-source": _one_of(NOISE_SOURCES),
}


def apply_preset(run_config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                 server_only: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resolve the ``preset`` key: the preset's values replace the keys left at their default.

    Flower hands the app one merged config (the pyproject defaults, then the user's
    ``--run-config``), in which a key left unset and a key set to its default look
    alike. So a preset's value is taken for every key at its default, and any other
    value the user gave wins; ``overrides`` (keys that the server and every client
    both know were given, as ``simulate()`` binds them into both apps) win always.
    The ServerApp and every ClientApp apply this to the same inputs, so they resolve
    the same run.

    ``server_only`` are keys the user gave that only the server can see (the ServerApp
    reads them from Flower's ``Run.override_config``). One of them at its default
    value, which the preset sets otherwise, is ambiguous: the clients would read it as
    unset and take the preset's value. That is a :class:`ConfigErrors`.

    >>> apply_preset({"preset": "seed-krum-ipm", "num-attackers": 5})["num-server-rounds"]
    50
    """
    name = run_config.get(KEY_PRESET, "")
    if not name:
        return dict(run_config)
    preset = load_preset(str(name))
    unknown = sorted(set(preset) - set(KEYS))
    if unknown:
        raise ConfigError(KEY_PRESET, name, "a preset of known run-config keys",
                          f"Unknown keys in it: {unknown}.")
    known = overrides or {}
    resolved = dict(run_config)
    for key, value in preset.items():
        if key not in known and run_config.get(key, DEFAULTS[key]) == DEFAULTS[key]:
            resolved[key] = value
    ambiguous = [ConfigError(
        key, value, f"a value other than its default ({DEFAULTS[key]!r}) alongside "
        f"preset={name!r}, which sets {key} = {preset[key]!r}",
        "Flower merges your --run-config into the defaults, so a key at its default looks "
        "unset and the clients would take the preset's value. Give the preset's keys "
        "yourself without preset, or use a copy of the preset file with this key changed "
        "(preset='/path/to/copy.toml'); fl-sweep --preset and simulate() have no such limit.")
        for key, value in (server_only or {}).items()
        if key in preset and key not in known and value == DEFAULTS[key]
        and preset[key] != DEFAULTS[key]]
    if ambiguous:
        raise ConfigErrors(ambiguous)
    return resolved


def parse_run_config(run_config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                     server_only: Mapping[str, Any] | None = None) -> RunConfig:
    """Validate Flower's ``run_config`` and return a :class:`RunConfig`.

    A ``preset`` is resolved first (:func:`apply_preset`, which says what
    ``overrides`` and ``server_only`` are). Unknown keys are errors (a typo must not
    silently run the default), and every error found is reported together.
    """
    try:
        run_config = apply_preset(run_config, overrides, server_only)
    except ConfigError as exc:
        raise ConfigErrors([exc]) from None
    errors: list[ConfigError] = []
    values: dict[str, Any] = {}
    for key, value in run_config.items():
        if key not in KEYS:
            errors.append(ConfigError(key, value, f"a known key: {sorted(KEYS)}",
                                      "Unknown key (a typo?)."))
            continue
        field = KEYS[key]
        try:
            value = _coerce(key, value, field.default)
        except ConfigError as exc:
            errors.append(exc)
            continue
        rule = RULES.get(key)
        problem = rule(value) if rule else None
        if problem:
            errors.append(ConfigError(key, value, problem))
            continue
        values[field.name] = value
    if errors:
        raise ConfigErrors(errors)
    cfg = RunConfig(**values)
    errors = _combination_errors(cfg)
    if errors:
        raise ConfigErrors(errors)
    return cfg


def _combination_errors(cfg: RunConfig) -> list[ConfigError]:
    """Checks that involve more than one key (the node count is checked by the server)."""
    errors: list[ConfigError] = []
    try:
        check_model_fits(cfg.model_name, DATASETS[cfg.dataset].input_shape)
    except ConfigError as exc:
        errors.append(exc)
    if cfg.data_dir:
        from fl_app.learning.data import check_data_config

        try:
            check_data_config(cfg.data)
        except ConfigError as exc:
            errors.append(exc)
    try:  # the combination only; where the run is (simulation or not) is checked at start
        resolve_noise_source(cfg.dp_noise_source, simulated=True, secure_mode=cfg.dp_secure_mode)
    except ConfigError as exc:
        errors.append(exc)
    kind = get_attack(cfg.attack).kind
    if cfg.omniscient and kind != AttackKind.UPDATE:
        errors.append(ConfigError(
            "attack", cfg.attack, "an update-crafting attack with ipm-knowledge='omniscient'",
            "The omniscient hook rewrites updates on the server; data and fault attacks run "
            "on clients: use ipm-knowledge='own' or 'colluders'."))
    if cfg.attack != "none" and cfg.num_attackers == 0:
        errors.append(ConfigError("num-attackers", 0, f"at least 1 with attack={cfg.attack!r}",
                                  "Set num-attackers, or attack='none'."))
    if cfg.attack_start_round > cfg.num_server_rounds and cfg.num_attackers > 0:
        errors.append(ConfigError("attack-start-round", cfg.attack_start_round,
                                  f"at most num-server-rounds = {cfg.num_server_rounds}",
                                  "The attack would never start."))
    if cfg.resume and not cfg.run_name:
        errors.append(ConfigError("resume", True, "resume=true together with run-name",
                                  "Name the run folder to continue: run-name='<name>' (and "
                                  "output-dir if it is not under ~/fl-runs)."))
    return errors


def with_overrides(cfg: RunConfig, **overrides: Any) -> RunConfig:
    """Return ``cfg`` with fields replaced (by field name), validated again."""
    merged = {**cfg.as_dict(), **{key_of(k): v for k, v in overrides.items()}}
    return parse_run_config(merged, merged)  # resolved already: the preset applies to nothing


