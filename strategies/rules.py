"""Every aggregation rule and pre-aggregation as pure math, by name (numpy only).

The one entry for tests, benchmarks, notebooks and the Flower strategies::

    aggregate(name, updates, *, num_byzantine=f, weights=None, **params) -> (d,) float64
    preaggregate(name, updates, *, num_byzantine=f, **params) -> (n', d) matrix

``updates`` is the ``(n, d)`` float32/float64 matrix of the round's updates
``d_i = w_i - w``, one row per client. ``params`` are the rule's declared parameters
(:class:`strategies.params.Param`, by keyword) and, for a stateful rule, its state
(centered clipping's ``center``). :func:`aggregate_detailed` and
:func:`preaggregate_detailed` also say what the rule did (rows selected or clipped,
iterations, the state to carry to the next round), which ``rounds.csv`` records.

Adding a rule: one file ``strategies/<name>.py`` with its math, its formula and paper
in the docstring, its ``PARAMS``, a ``rule(updates, *, num_byzantine, weights,
**params) -> RuleResult`` adapter, a ``check_size(n, f, **params)`` and a ``RULES``
tuple of :class:`strategies.contract.Rule`; then the module in the import and loop at
the bottom of this module (it is then also a value of the ``strategy`` run-config key).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from strategies import (
    arc,
    bucketing,
    bulyan,
    centered_clipping,
    clipping,
    geometric_median,
    krum_rules,
    mda,
    mean,
    median,
    nnm,
    trimmed_mean,
)
from strategies.contract import (
    PREAGGREGATION_CONTEXT,
    RULE_CONTEXT,
    Preaggregation,
    PreaggregationResult,
    Rule,
    RuleResult,
)
from strategies.errors import RuleParameterError, UnknownStrategyError
from strategies.params import Param, check_declared_keywords
from strategies.preconditions import check_update_matrix

__all__ = ["PREAGGREGATIONS", "RULES", "PreaggregationResult", "RuleResult", "aggregate",
           "aggregate_detailed", "get_preaggregation", "get_rule", "preaggregate",
           "preaggregate_detailed",
           "preaggregation_names", "register_preaggregation", "register_rule", "rule_names"]


RULES: dict[str, Rule] = {}
PREAGGREGATIONS: dict[str, Preaggregation] = {}


def register_rule(rule: Rule) -> Rule:
    """Register ``rule`` under its name; its params must match its adapter's keywords."""
    if rule.name in RULES:
        raise ValueError(f"aggregation rule {rule.name!r} is already registered")
    check_declared_keywords(f"rule {rule.name!r}", rule.fn, rule.params, RULE_CONTEXT)
    RULES[rule.name] = rule
    return rule


def register_preaggregation(step: Preaggregation) -> Preaggregation:
    """Register a pre-aggregation under its name (its params checked like a rule's)."""
    if step.name in PREAGGREGATIONS:
        raise ValueError(f"pre-aggregation {step.name!r} is already registered")
    check_declared_keywords(f"pre-aggregation {step.name!r}", step.fn, step.params,
                            PREAGGREGATION_CONTEXT)
    PREAGGREGATIONS[step.name] = step
    return step


def rule_names() -> list[str]:
    """The registered aggregation rules, sorted."""
    return sorted(RULES)


def preaggregation_names() -> list[str]:
    """The registered pre-aggregations, sorted."""
    return sorted(PREAGGREGATIONS)


def get_rule(name: str) -> Rule:
    """The rule registered as ``name``; an unknown name lists the valid ones."""
    try:
        return RULES[name]
    except KeyError:
        raise UnknownStrategyError(
            f"unknown aggregation rule {name!r}; expected one of {rule_names()}") from None


def get_preaggregation(name: str) -> Preaggregation:
    """The pre-aggregation registered as ``name``; an unknown name lists the valid ones."""
    try:
        return PREAGGREGATIONS[name]
    except KeyError:
        raise UnknownStrategyError(
            f"unknown pre-aggregation {name!r}; expected one of {preaggregation_names()}"
        ) from None


def _check_params(kind: str, name: str, declared: Sequence[Param], params: dict[str, Any],
                  allowed_extra: Sequence[str] = ()) -> dict[str, Any]:
    """The declared defaults overridden by ``params``; unknown or bad values are refused."""
    known = {p.kwarg: p for p in declared}
    unknown = sorted(set(params) - set(known) - set(allowed_extra))
    if unknown:
        raise RuleParameterError(f"{kind} {name!r} takes the parameters {sorted(known)}; "
                                 f"got unknown {unknown}")
    for key, value in params.items():
        problem = known[key].rule(value) if key in known and known[key].rule else None
        if problem:
            raise RuleParameterError(f"{kind} {name!r}: {key}={value!r}, expected {problem}")
    return {**{k: p.default for k, p in known.items()}, **params}


def aggregate_detailed(name: str, updates: np.ndarray, *, num_byzantine: int = 0,
                       weights: Sequence[float] | None = None, **params: Any) -> RuleResult:
    """Run rule ``name`` on the ``(n, d)`` ``updates``; see the module docstring.

    Raises:
        UnknownStrategyError: ``name`` is not a rule.
        RuleParameterError: an unknown or bad parameter, or ``weights`` for a rule
            that does not use them.
        ByzantineSizeError: ``n`` too small for ``f`` under this rule.
        UpdatesError: ``updates`` not an ``(n, d)`` float matrix.

    """
    rule = get_rule(name)
    check_update_matrix(updates)
    values = _check_params("rule", name, rule.params, params, ("center",))
    if weights is not None and not rule.weighted:
        raise RuleParameterError(
            f"rule {name!r} treats every update alike and takes no weights (example counts "
            "are self-reported, so a robust rule must not trust them); pass weights=None.")
    declared = {k: v for k, v in values.items() if k != "center"}
    rule.check_size(updates.shape[0], num_byzantine, **declared)
    return rule.fn(updates, num_byzantine=num_byzantine, weights=weights, **values)


def aggregate(name: str, updates: np.ndarray, *, num_byzantine: int = 0,
              weights: Sequence[float] | None = None, **params: Any) -> np.ndarray:
    """The ``(d,)`` float64 aggregate of rule ``name`` (:func:`aggregate_detailed`).

    >>> import numpy as np
    >>> aggregate("median", np.array([[0.0, 1.0], [2.0, 5.0], [100.0, 3.0]]), num_byzantine=1)
    array([2., 3.])
    """
    return aggregate_detailed(name, updates, num_byzantine=num_byzantine, weights=weights,
                              **params).update


def preaggregate_detailed(name: str, updates: np.ndarray, *, num_byzantine: int = 0,
                          rng: np.random.Generator | None = None,
                          **params: Any) -> PreaggregationResult:
    """Run pre-aggregation ``name`` on ``updates`` (``rng``: for randomized steps)."""
    step = get_preaggregation(name)
    check_update_matrix(updates)
    values = _check_params("pre-aggregation", name, step.params, params)
    step.check_size(updates.shape[0], num_byzantine, **values)
    return step.fn(updates, num_byzantine=num_byzantine,
                   rng=rng if rng is not None else np.random.default_rng(0), **values)


def preaggregate(name: str, updates: np.ndarray, *, num_byzantine: int = 0,
                 rng: np.random.Generator | None = None, **params: Any) -> np.ndarray:
    """The rows pre-aggregation ``name`` makes of ``updates`` (:func:`preaggregate_detailed`).

    >>> import numpy as np
    >>> preaggregate("clipping", np.array([[3.0, 4.0], [0.3, 0.4]]), max_norm=1.0)
    array([[0.6, 0.8],
           [0.3, 0.4]])
    """
    return preaggregate_detailed(name, updates, num_byzantine=num_byzantine, rng=rng,
                                 **params).updates


# The registry: every rule module lists its rules, every pre-aggregation module its step.
for _module in (mean, krum_rules, median, trimmed_mean, geometric_median, bulyan, centered_clipping,
                mda):
    for _rule in _module.RULES:
        register_rule(_rule)
for _module in (nnm, bucketing, clipping, arc):
    register_preaggregation(_module.PREAGGREGATION)
