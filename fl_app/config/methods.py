"""The run-config keys that aggregators and attacks declare (``<method>-<param>``).

Each strategy and attack declares its parameters next to its formula
(:class:`strategies.params.Param`). This module gathers them into run-config keys, so
the schema, the README's table (:func:`params_table`) and the reports' labels are all
read from the one declaration, and adding a parameter touches only the method's file
(and its default in ``pyproject.toml``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from attacks.registry import attack_names, get_attack
from strategies.params import Param
from strategies.registry import get_strategy, strategy_names

STRATEGY, ATTACK = "strategy", "attack"


@dataclass(frozen=True)
class DeclaredKey:
    """A run-config key declared by a method: ``role`` is the key that selects it."""

    key: str
    role: str  # STRATEGY or ATTACK: the run-config key whose value is `method`
    method: str
    param: Param


def _declarations(role: str, method: str) -> tuple[Param, ...]:
    return get_strategy(method).params if role == STRATEGY else get_attack(method).params


def declared_keys() -> dict[str, DeclaredKey]:
    """Every method-declared key, strategies first, each in declaration order."""
    methods = [(STRATEGY, n) for n in strategy_names()] + [(ATTACK, n) for n in attack_names()]
    declared: dict[str, DeclaredKey] = {}
    for role, method in methods:
        for param in _declarations(role, method):
            key = param.key(method)
            if key in declared:  # two methods whose names and params collide
                raise ValueError(f"run-config key {key!r} is declared twice")
            declared[key] = DeclaredKey(key, role, method, param)
    return declared


def method_kwargs(values: Mapping[str, Any], role: str, method: str) -> dict[str, Any]:
    """The keyword arguments of ``method`` from run-config ``values`` (``{"epsilon": 1.0}``)."""
    return {p.kwarg: values[p.key(method)] for p in _declarations(role, method)}


def params_table() -> str:
    """The README's table of method parameters (Markdown), generated from the declarations.

    A test compares it with the README, so the table cannot drift from the code.
    """
    rows = ["| key | default | selected by | meaning |", "|---|---|---|---|"]
    for d in declared_keys().values():
        default = str(d.param.default).lower() if isinstance(d.param.default, bool) else (
            repr(d.param.default) if isinstance(d.param.default, str) else d.param.default)
        rows.append(f"| `{d.key}` | `{default}` | `{d.role}='{d.method}'` | {d.param.help} |")
    return "\n".join(rows)
