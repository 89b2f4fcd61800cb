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
from strategies.rules import get_preaggregation, preaggregation_names

# The run-config keys that select a method (pre-aggregation: a comma-separated list)
STRATEGY, PREAGGREGATION, ATTACK = "strategy", "pre-aggregation", "attack"
_NAMES = {STRATEGY: strategy_names, PREAGGREGATION: preaggregation_names, ATTACK: attack_names}


@dataclass(frozen=True)
class DeclaredKey:
    """A run-config key declared by a method: ``role`` is the key that selects it."""

    key: str
    role: str  # STRATEGY, PREAGGREGATION or ATTACK: the key whose value names `method`
    method: str
    param: Param


def _declarations(role: str, method: str) -> tuple[Param, ...]:
    if role == STRATEGY:
        return get_strategy(method).params
    if role == PREAGGREGATION:
        return get_preaggregation(method).params
    return get_attack(method).params


def declared_keys() -> dict[str, DeclaredKey]:
    """Every method-declared key: strategies, pre-aggregations, attacks, in declaration order."""
    methods = [(role, name) for role, names in _NAMES.items() for name in names()]
    declared: dict[str, DeclaredKey] = {}
    for role, method in methods:
        for param in _declarations(role, method):
            key = param.key(method)
            if key in declared:  # two methods whose names and params collide
                raise ValueError(f"run-config key {key!r} is declared twice")
            declared[key] = DeclaredKey(key, role, method, param)
    return declared


DECLARED = declared_keys()
"""The run-config keys that strategies, pre-aggregations and attacks declare."""


def method_kwargs(values: Mapping[str, Any], role: str, method: str) -> dict[str, Any]:
    """The keyword arguments of ``method`` from run-config ``values`` (``{"epsilon": 1.0}``)."""
    return {p.kwarg: values[p.key(method)] for p in _declarations(role, method)}


def preaggregation_list(value: str) -> list[str]:
    """The steps of a ``pre-aggregation`` value, in order (``"nnm, bucketing"``).

    A comma-separated string, because Flower's run-config values are scalars.

    >>> preaggregation_list("nnm, bucketing"), preaggregation_list("")
    (['nnm', 'bucketing'], [])
    """
    return [name.strip() for name in value.split(",") if name.strip()]


def unknown_preaggregations(value: str) -> str | None:
    """The rule of the ``pre-aggregation`` key: ``None``, or what is expected instead."""
    unknown = [n for n in preaggregation_list(value) if n not in preaggregation_names()]
    if unknown:
        return (f"a comma-separated list of {preaggregation_names()} (unknown: {unknown}), "
                "or '' for none")
    return None


def params_table() -> str:
    """The README's table of method parameters (Markdown), generated from the declarations.

    A test compares it with the README, so the table cannot drift from the code.
    """
    rows = ["| key | default | selected by | meaning |", "|---|---|---|---|"]
    for d in declared_keys().values():
        default = str(d.param.default).lower() if isinstance(d.param.default, bool) else (
            repr(d.param.default) if isinstance(d.param.default, str) else d.param.default)
        selected_by = (f"`{d.method}` in `{d.role}`" if d.role == PREAGGREGATION
                       else f"`{d.role}='{d.method}'`")
        rows.append(f"| `{d.key}` | `{default}` | {selected_by} | {d.param.help} |")
    return "\n".join(rows)
