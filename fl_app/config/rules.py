"""The rule of every run-config key whose values are restricted beyond their type.

:func:`coerce` turns a value into its key's type (that of the default); ``RULES`` then
says what else is expected of it. The DP keys that ``DPSettings`` checks are left to it
(:mod:`fl_app.config.schema`), and declared keys bring their own rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attacks.registry import attack_names
from fl_app.config.methods import DECLARED, unknown_preaggregations
from fl_app.config.threat import ATTACK_KNOWLEDGE
from fl_app.errors import ConfigError
from fl_app.learning.data import DATASETS, PARTITIONINGS
from fl_app.learning.device import KEY_DEVICE, device_rule
from fl_app.learning.models import MODELS
from fl_app.privacy.levels import DP_LEVELS
from fl_app.privacy.randomness import NOISE_SOURCES
from fl_app.runs.trackers import TRACKERS
from strategies.params import at_least, non_negative_finite, one_of, positive_finite
from strategies.registry import strategy_names


def coerce(key: str, value: Any, default: Any) -> Any:
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


def _fraction(v: float) -> str | None:
    return None if 0.0 < v <= 1.0 else "a number in (0, 1]"


# One rule per key whose values are restricted beyond their type. The DP keys that
# DPSettings checks are left to it (dp_settings_errors); declared keys bring their rule.
RULES: dict[str, Callable[[Any], str | None]] = {
    "num-server-rounds": at_least(1),
    "fraction-fit": _fraction,
    "fraction-evaluate": lambda v: None if 0.0 <= v <= 1.0 else "a number in [0, 1]",
    "dataset": one_of(sorted(DATASETS)),
    "model": one_of(("auto", *sorted(MODELS))),
    "partitioning": one_of(PARTITIONINGS),
    "dirichlet-alpha": lambda v: None if v > 0 else "a number > 0",
    "partition-classes": at_least(1),
    "partition-shards": at_least(1),
    "local-epochs": at_least(1),
    "batch-size": at_least(1),
    "learning-rate": positive_finite,
    "momentum": lambda v: None if 0.0 <= v < 1.0 else "a number in [0, 1)",
    "client-threads": at_least(1),
    KEY_DEVICE: device_rule,
    "strategy": one_of(strategy_names()),
    "num-byzantine": lambda v: None if v >= -1 else "an integer >= 0, or -1 for num-attackers",
    "pre-aggregation": unknown_preaggregations,
    "server-learning-rate": positive_finite,
    "server-momentum": lambda v: None if 0.0 <= v < 1.0 else "a number in [0, 1)",
    "accept-failures": lambda v: None if v >= -1 else "an integer >= 0, or -1 for any number",
    "tracker": one_of(tuple(TRACKERS)),
    "max-failed-rounds": lambda v: None if v >= 0 else "an integer >= 1, or 0 never to stop",
    "max-update-norm": lambda v: None if v >= 0 else "a number > 0, or 0 for no limit",
    "attack": one_of(attack_names()),
    "num-attackers": at_least(0),
    "attack-knowledge": one_of(ATTACK_KNOWLEDGE),
    "attack-start-round": at_least(1),
    # 0 means "not set" for these three, which DPSettings writes as None
    "dp-target-epsilon": non_negative_finite,
    "dp-delta": lambda v: None if 0.0 <= v < 1.0 else "0 (automatic) or a number in (0, 1)",
    "dp-max-epsilon": non_negative_finite,
    "dp-noise-source": one_of(NOISE_SOURCES),
    "dp-level": one_of(tuple(DP_LEVELS)),
    "audit-canaries": at_least(0),
    "audit-exclude-members": at_least(0),
    "dp-clipping-norm": positive_finite,
    **{key: d.param.rule for key, d in DECLARED.items() if d.param.rule},
}
