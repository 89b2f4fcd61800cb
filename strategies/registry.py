"""The aggregation strategies, registered by name (the ``strategy`` run-config key).

Every rule of :mod:`strategies.rules` is a strategy of the same name, with the rule's
declared parameters (run-config keys ``<name>-<param>``). FedAvg, Krum and Multi-Krum
keep their own classes (:class:`~strategies.fedavg.UpdateSpaceFedAvg`,
:mod:`strategies.krum_strategy`); every other rule is a
:class:`~strategies.fedavg.RuleStrategy`. Adding an aggregator is therefore one rule
file plus one line in :mod:`strategies.rules`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from strategies.errors import UnknownStrategyError
from strategies.fedavg import RuleStrategy, UpdateSpaceFedAvg
from strategies.krum_rules import MULTIKRUM_PARAMS
from strategies.krum_strategy import Krum, MultiKrum
from strategies.params import Param
from strategies.rules import RULES

# factory(num_byzantine=f, params={keyword: value}, **strategy_kwargs)
StrategyFactory = Callable[..., UpdateSpaceFedAvg]


@dataclass(frozen=True)
class StrategySpec:
    """One registered strategy and its declared parameters."""

    name: str
    factory: StrategyFactory
    params: tuple[Param, ...] = ()


STRATEGIES: dict[str, StrategySpec] = {}


def register_strategy(name: str, factory: StrategyFactory,
                      params: tuple[Param, ...] = ()) -> StrategySpec:
    """Register ``factory`` with its declared ``params`` as ``name``; refuse a taken name."""
    if name in STRATEGIES:
        raise ValueError(f"strategy {name!r} is already registered")
    STRATEGIES[name] = StrategySpec(name, factory, params)
    return STRATEGIES[name]


def strategy_names() -> list[str]:
    """The registered names, sorted."""
    return sorted(STRATEGIES)


def get_strategy(name: str) -> StrategySpec:
    """The spec registered as ``name``; an unknown name lists the valid ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise UnknownStrategyError(
            f"unknown strategy {name!r}; expected one of {strategy_names()}") from None


def make_strategy(name: str, *, num_byzantine: int = 0, params: dict[str, Any] | None = None,
                  **kwargs: Any) -> UpdateSpaceFedAvg:
    """Build the strategy ``name``; ``params`` by keyword (``{"m": 3}``), defaults otherwise.

    ``kwargs`` go to :class:`~strategies.fedavg.UpdateSpaceFedAvg` (Flower's FedAvg
    arguments, hooks) and to the pipeline (``preaggregation``, ``server_learning_rate``,
    ``server_momentum``, ``seed``).
    """
    return get_strategy(name).factory(num_byzantine=num_byzantine, params=dict(params or {}),
                                      **kwargs)


def _fedavg(*, num_byzantine: int, params: dict[str, Any], **kwargs: Any) -> UpdateSpaceFedAvg:
    return RuleStrategy("fedavg", num_byzantine=num_byzantine, **kwargs)


def _krum(*, num_byzantine: int, params: dict[str, Any], **kwargs: Any) -> UpdateSpaceFedAvg:
    return Krum(num_byzantine=num_byzantine, **kwargs)


def _multikrum(*, num_byzantine: int, params: dict[str, Any],
               **kwargs: Any) -> UpdateSpaceFedAvg:
    return MultiKrum(num_byzantine=num_byzantine,
                     num_selected=params.get("m", MULTIKRUM_PARAMS[0].default), **kwargs)


def _rule_factory(rule: str) -> StrategyFactory:
    def factory(*, num_byzantine: int, params: dict[str, Any],
                **kwargs: Any) -> UpdateSpaceFedAvg:
        return RuleStrategy(rule, num_byzantine=num_byzantine, params=params, **kwargs)

    return factory


register_strategy("fedavg", _fedavg)
register_strategy("krum", _krum)
register_strategy("multikrum", _multikrum, MULTIKRUM_PARAMS)
for _rule in RULES.values():  # every other rule, as a RuleStrategy
    if _rule.name not in STRATEGIES:
        register_strategy(_rule.name, _rule_factory(_rule.name), _rule.params)
