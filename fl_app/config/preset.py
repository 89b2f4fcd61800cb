"""Presets: TOML files of run-config values, shipped in ``fl_app/config/presets/`` or your own.

The run-config key ``preset`` names one (``preset='seed-krum-ipm'`` or a path);
:func:`fl_app.config.apply_preset` resolves it before validation, for
``flwr run``, ``simulate()`` and every client alike. ``fl-sweep --preset`` reads
the same files through :func:`load_preset`.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from fl_app.errors import ConfigError

KEY_PRESET = "preset"


def preset_names() -> list[str]:
    """Names of the presets shipped in ``fl_app/presets`` (``preset='NAME'``)."""
    folder = resources.files("fl_app.config") / "presets"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir()
                  if p.name.endswith(".toml"))


def load_preset(preset: str | Path, key: str = KEY_PRESET) -> dict[str, Any]:
    """Read a preset: a TOML file of run-config values, by path or by shipped name.

    ``key`` is how errors name the setting (``preset``, or ``--preset`` for fl-sweep).

    Raises:
        ConfigError: The file does not exist, is not TOML, holds a table or array, or
            names another preset (presets do not nest).
    """
    path = Path(preset).expanduser()
    if not path.is_file():
        name = str(preset).removesuffix(".toml")
        shipped = resources.files("fl_app.config") / "presets" / f"{name}.toml"
        if not shipped.is_file():
            raise ConfigError(key, str(preset),
                              f"a TOML file or a shipped preset: {preset_names()}")
        text = shipped.read_text()
    else:
        text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(key, str(preset), "a TOML file of `key = value` lines",
                          str(exc)) from None
    bad = [k for k, value in data.items() if not isinstance(value, (bool, int, float, str))]
    if bad:
        raise ConfigError(key, str(preset), "flat `key = value` run-config values",
                          f"These keys hold tables or arrays: {bad}.")
    if KEY_PRESET in data:
        raise ConfigError(key, str(preset), "a preset that does not name another preset",
                          f"It sets {KEY_PRESET} = {data[KEY_PRESET]!r}; copy that preset's "
                          "keys into this file instead.")
    return data
