"""The run configuration: the schema of every key (:mod:`~fl_app.config.schema`) and presets.

Defaults live in ``pyproject.toml``; :func:`parse_run_config` validates Flower's
merged run config once, after resolving a ``preset`` (:mod:`~fl_app.config.preset`),
and builds the typed sub-settings. The keys that strategies and attacks declare come
from their declarations (:mod:`~fl_app.config.methods`).
"""

from fl_app.config.methods import DeclaredKey, params_table
from fl_app.config.schema import (
    DECLARED,
    DEFAULTS,
    KEYS,
    PLACEMENT_KEYS,
    RENAMED_KEYS,
    AttackSettings,
    RunConfig,
    apply_preset,
    key_of,
    parse_run_config,
    stored_config,
    with_overrides,
)

__all__ = ["DECLARED", "DEFAULTS", "KEYS", "PLACEMENT_KEYS", "RENAMED_KEYS", "AttackSettings",
           "DeclaredKey", "RunConfig", "apply_preset", "key_of", "params_table",
           "parse_run_config", "stored_config", "with_overrides"]
