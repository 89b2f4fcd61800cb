"""The run configuration: the schema of every key (:mod:`~fl_app.config.schema`) and presets.

Defaults live in ``pyproject.toml``; :func:`parse_run_config` validates Flower's
merged run config once, after resolving a ``preset`` (:mod:`~fl_app.config.preset`).
"""

from fl_app.config.schema import (
    DEFAULTS,
    KEYS,
    PLACEMENT_KEYS,
    RunConfig,
    apply_preset,
    key_of,
    parse_run_config,
    with_overrides,
)

__all__ = ["DEFAULTS", "KEYS", "PLACEMENT_KEYS", "RunConfig", "apply_preset", "key_of",
           "parse_run_config", "with_overrides"]
