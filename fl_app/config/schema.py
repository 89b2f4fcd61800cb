"""The run configuration: every knob, its type, its allowed values, checked in one place.

Defaults live in ``pyproject.toml`` under ``[tool.flwr.app.config]`` (Flower's
place for them, overridable with ``flwr run . --run-config ...``); this module
declares each key's type (its rule is in :mod:`~fl_app.config.rules`). A test keeps the
two in step.

:func:`parse_run_config` turns Flower's flat ``run_config`` mapping into a
:class:`RunConfig` and reports every bad value at once (:class:`ConfigErrors`),
before any data is loaded or any round is run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from attacks.registry import get_attack
from fl_app.config.methods import (
    ATTACK,
    DECLARED,
    PREAGGREGATION,
    STRATEGY,
    method_kwargs,
    preaggregation_list,
)
from fl_app.config.preset import KEY_PRESET, load_preset
from fl_app.config.rules import RULES, coerce
from fl_app.config.threat import AttackSettings
from fl_app.errors import ConfigError, ConfigErrors
from fl_app.learning.data import DATASETS, DataConfig
from fl_app.learning.models import check_model_fits
from fl_app.privacy import DPSettings
from fl_app.privacy.levels import DEFAULT_DP_LEVEL, DP_LEVELS
from fl_app.privacy.levels.central import central_dp_errors
from fl_app.privacy.randomness import resolve_noise_source
from fl_app.task import TrainSettings

# Keys that say where a run writes and whether it continues there; they never change what
# it computes (a resumed run, a sweep's cells and its reports compare runs without them).
PLACEMENT_KEYS = ("output-dir", "run-name", "resume")
# Keys renamed since a release: a config that still uses one gets an error naming the
# new key, and a stored run's config (summary.json, checkpoint) is read under the new name.
RENAMED_KEYS = {"ipm-knowledge": "attack-knowledge"}


def _declared_defaults() -> dict[str, Any]:
    return {key: d.param.default for key, d in DECLARED.items()}


@dataclass(frozen=True)
class RunConfig:
    """A validated run configuration; field ``foo_bar`` is run-config key ``foo-bar``.

    The keys a strategy or an attack declares (``ipm-epsilon``, ``multikrum-m``) are in
    ``method_params``, by key. Typed sub-settings (:attr:`train`, :attr:`dp_settings`,
    :attr:`attack_settings`, :attr:`strategy_params`) are built once from the checked
    values; the defaults of local training and DP-SGD are those of
    :class:`~fl_app.task.TrainSettings` and :class:`~fl_app.privacy.DPSettings`.
    """

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
    partition_classes: int = 2
    partition_shards: int = 2
    local_epochs: int = TrainSettings.local_epochs
    batch_size: int = TrainSettings.batch_size
    learning_rate: float = TrainSettings.learning_rate
    momentum: float = TrainSettings.momentum
    client_threads: int = 1
    device: str = "auto"  # fl_app.learning.device: auto | cpu | cuda | cuda:N
    strategy: str = "fedavg"
    num_byzantine: int = 0
    pre_aggregation: str = ""
    server_learning_rate: float = 1.0
    server_momentum: float = 0.0
    accept_failures: int = -1
    max_failed_rounds: int = 2
    tracker: str = "none"
    tracker_dir: str = ""  # '': the run folder
    tracker_experiment: str = ""  # '': the run's name
    max_update_norm: float = 1e6
    attack: str = "none"
    num_attackers: int = 0
    attack_knowledge: str = "own"
    attack_start_round: int = 1
    audit_canaries: int = 0  # fl-audit canaries: m mislabelled test images (0: none)
    audit_exclude_members: int = 0  # fl-audit membership's shadows: drop the m members
    dp: bool = False
    dp_level: str = DEFAULT_DP_LEVEL
    dp_clipping_norm: float = 1.0
    dp_noise_multiplier: float = DPSettings.noise_multiplier
    dp_max_grad_norm: float = DPSettings.max_grad_norm
    dp_target_epsilon: float = 0.0  # 0: not set (DPSettings.target_epsilon = None)
    dp_delta: float = 0.0  # 0: automatic per client (DPSettings.delta = None)
    dp_accountant: str = DPSettings.accountant
    dp_max_epsilon: float = 0.0  # 0: no budget (DPSettings.max_epsilon = None)
    dp_grad_sample_mode: str = DPSettings.grad_sample_mode
    dp_noise_source: str = "auto"
    dp_secure_mode: bool = DPSettings.secure_mode
    output_dir: str = ""
    run_name: str = ""
    resume: bool = False
    method_params: Mapping[str, Any] = field(default_factory=_declared_defaults)

    @property
    def data(self) -> DataConfig:
        """The part of the config that decides which examples a partition holds."""
        return DataConfig(self.dataset, self.data_dir, self.partitioning,
                          float(self.dirichlet_alpha), self.seed, self.partition_classes,
                          self.partition_shards)

    @property
    def model_name(self) -> str:
        """The model to train: ``model``, or the dataset's default when ``model = 'auto'``."""
        return DATASETS[self.dataset].default_model if self.model == "auto" else self.model

    @property
    def omniscient(self) -> bool:
        """True when the server-side omniscient adversary attacks (a simulation only)."""
        return self.attack_settings.omniscient

    @property
    def declared_byzantine(self) -> int:
        """The f the defence declares: ``num-byzantine``, or ``num-attackers`` when it is -1."""
        return self.num_attackers if self.num_byzantine == -1 else self.num_byzantine

    @cached_property
    def train(self) -> TrainSettings:
        """Local SGD settings of every client."""
        return TrainSettings(self.local_epochs, self.batch_size, self.learning_rate,
                             self.momentum)

    @property
    def client_dp(self) -> bool:
        """Whether honest clients train with DP themselves (``dp`` at a level with a client round).

        ``central`` adds its noise on the server: its clients train, and report, in the clear.
        """
        return self.dp and DP_LEVELS[self.dp_level].client_round is not None

    @cached_property
    def dp_settings(self) -> DPSettings:
        """DP-SGD settings of the honest clients (used when ``dp``); 0 means "not set"."""
        return DPSettings(
            noise_multiplier=self.dp_noise_multiplier, max_grad_norm=self.dp_max_grad_norm,
            delta=self.dp_delta or None, accountant=self.dp_accountant,
            target_epsilon=self.dp_target_epsilon or None,
            max_epsilon=self.dp_max_epsilon or None,
            grad_sample_mode=self.dp_grad_sample_mode, secure_mode=self.dp_secure_mode)

    @cached_property
    def attack_settings(self) -> AttackSettings:
        """The attack, its threat model and its declared parameters."""
        return AttackSettings(self.attack, self.num_attackers, self.attack_knowledge,
                              self.attack_start_round,
                              method_kwargs(self.method_params, ATTACK, self.attack))

    @cached_property
    def strategy_params(self) -> dict[str, Any]:
        """The strategy's declared parameters, by keyword (``{"m": 0}`` for Multi-Krum)."""
        return method_kwargs(self.method_params, STRATEGY, self.strategy)

    @cached_property
    def preaggregation_steps(self) -> tuple[tuple[str, dict[str, Any]], ...]:
        """The ``pre-aggregation`` steps in order, each with its declared parameters."""
        return tuple((name, method_kwargs(self.method_params, PREAGGREGATION, name))
                     for name in preaggregation_list(self.pre_aggregation))

    def as_dict(self) -> dict[str, Any]:
        """Return the config keyed by run-config key (kebab-case), as written to summary.json."""
        values = {key_of(f.name): getattr(self, f.name) for f in fields(self)
                  if f.name != "method_params"}
        return {**values, **{key: self.method_params[key] for key in DECLARED}}


def key_of(field_name: str) -> str:
    """Return the run-config key of a :class:`RunConfig` field (``num_server_rounds`` ...)."""
    return field_name.replace("_", "-")


_FIELDS = {key_of(f.name): f for f in fields(RunConfig) if f.name != "method_params"}
DEFAULTS: dict[str, Any] = {**{key: f.default for key, f in _FIELDS.items()},
                            **_declared_defaults()}
"""Every run-config key and its default (pyproject.toml holds the same; a test checks)."""
KEYS = tuple(DEFAULTS)


def stored_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config a run stored (summary.json, checkpoint), in today's keys.

    A renamed key reads under its new name; a key added since reads as its default.
    """
    renamed = {RENAMED_KEYS.get(k, k): v for k, v in config.items()}
    return {**DEFAULTS, **renamed}


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
    values, errors = _checked_values(run_config)
    if errors:
        raise ConfigErrors(errors)
    method_params = {**_declared_defaults(), **{k: values.pop(k) for k in DECLARED
                                                if k in values}}
    cfg = RunConfig(**{_FIELDS[k].name: v for k, v in values.items()},
                    method_params=method_params)
    errors = _combination_errors(cfg)
    if errors:
        raise ConfigErrors(errors)
    return cfg


def _checked_values(run_config: Mapping[str, Any]) -> tuple[dict[str, Any], list[ConfigError]]:
    """Each key's value coerced to its type and checked by its rule, keyed by key."""
    errors: list[ConfigError] = []
    values: dict[str, Any] = {}
    for key, value in run_config.items():
        if key in RENAMED_KEYS:
            errors.append(ConfigError(key, value, f"the key {RENAMED_KEYS[key]!r}",
                                      f"{key!r} was renamed: write "
                                      f"{RENAMED_KEYS[key]}={value!r}."))
            continue
        if key not in DEFAULTS:
            errors.append(ConfigError(key, value, f"a known key: {sorted(KEYS)}",
                                      "Unknown key (a typo?)."))
            continue
        try:
            value = coerce(key, value, DEFAULTS[key])
        except ConfigError as exc:
            errors.append(exc)
            continue
        rule = RULES.get(key)
        problem = rule(value) if rule else None
        if problem:
            errors.append(ConfigError(key, value, problem))
            continue
        values[key] = value
    return values, errors


def _dp_settings_errors(cfg: RunConfig) -> list[ConfigError]:
    """What DPSettings refuses in the DP keys (checked whether or not ``dp`` is on)."""
    try:
        cfg.dp_settings  # noqa: B018 (building it is the check)
    except ConfigErrors as exc:
        return exc.errors
    except ConfigError as exc:
        return [exc]
    return []


def _combination_errors(cfg: RunConfig) -> list[ConfigError]:
    """Checks that involve more than one key (the node count is checked by the server)."""
    errors = _dp_settings_errors(cfg)
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
    if cfg.dp and cfg.dp_level == "central":
        errors += central_dp_errors(cfg.strategy, cfg.preaggregation_steps,
                                    cfg.server_learning_rate, cfg.server_momentum,
                                    cfg.max_update_norm, cfg.dp_clipping_norm, cfg.attack,
                                    cfg.attack_knowledge, cfg.dp_max_epsilon)
    supported = get_attack(cfg.attack).knowledge
    if cfg.attack_knowledge not in supported:
        errors.append(ConfigError(
            "attack-knowledge", cfg.attack_knowledge,
            f"one of {list(supported)} with attack={cfg.attack!r}",
            "The omniscient hook rewrites updates on the server, so data and fault attacks "
            "(which run on clients) cannot use it; an attack built on several honest "
            "updates (min-max, mimic, ...) needs at least its colluders' own."
            if cfg.attack_knowledge != "colluders" else ""))
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


