"""Command-line values: ``--set KEY=VALUE`` and ``--grid KEY=V1,V2`` as TOML values."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from typing import Any

from fl_app.errors import ConfigError, ConfigErrors


def parse_value(text: str) -> Any:
    """Parse one command-line value as a TOML value; anything else is a bare string.

    >>> [parse_value(t) for t in ("3", "0.1", "true", "'krum'", '"a b"', "krum", "/x/y")]
    [3, 0.1, True, 'krum', 'a b', 'krum', '/x/y']
    """
    text = text.strip()
    if "\n" in text:
        return text
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    # dates, arrays and tables are not run-config values: keep what was typed
    return value if isinstance(value, (bool, int, float, str)) else text


def split_values(text: str) -> list[str]:
    """Split ``V1,V2,...`` at the commas outside quotes.

    >>> split_values("fedavg,krum")
    ['fedavg', 'krum']
    >>> split_values("'a,b', 'c'")
    ["'a,b'", " 'c'"]
    """
    items, current, quote = [], [], ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ",":
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return items


def split_assignment(arg: str, option: str) -> tuple[str, str]:
    """Split ``KEY=VALUE`` (the value may contain ``=``), or name the option and the form."""
    key, sep, value = arg.partition("=")
    if not sep or not key.strip():
        form = "KEY=V1,V2,..." if option == "--grid" else "KEY=VALUE"
        raise ConfigError(option, arg, form)
    return key.strip(), value


def format_value(value: Any) -> str:
    """Write a value as in a cell name: TOML's ``true``/``false``, numbers and bare strings.

    >>> [format_value(v) for v in (True, 3, 0.1, 1.0, "krum")]
    ['true', '3', '0.1', '1.0', 'krum']
    """
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """Parse ``--set KEY=VALUE`` arguments (each value one TOML value or bare string)."""
    out: dict[str, Any] = {}
    for arg in args:
        key, text = split_assignment(arg, "--set")
        out[key] = parse_value(text)
    return out


def parse_grid(args: Sequence[str]) -> dict[str, list[Any]]:
    """Parse one ``--grid KEY=V1,V2,... KEY=...`` into ``{key: [values]}``, in order.

    >>> parse_grid(["num-attackers=1,3", "strategy=fedavg,krum"])
    {'num-attackers': [1, 3], 'strategy': ['fedavg', 'krum']}
    """
    grid: dict[str, list[Any]] = {}
    errors = []
    for arg in args:
        key, text = split_assignment(arg, "--grid")
        items = split_values(text)
        if key in grid:
            errors.append(ConfigError(key, text, "one --grid entry per key",
                                      f"It is already given as {grid[key]!r}."))
        elif any(not item.strip() for item in items):
            errors.append(ConfigError(key, text, "a comma-separated list of values",
                                      "An empty value is not allowed."))
        else:
            grid[key] = [parse_value(item) for item in items]
    if errors:
        raise ConfigErrors(errors)
    return grid
