"""The aggregation strategies, registered by name (the ``strategy`` run-config key).

Adding an aggregator is one file with its math, its Flower class and its declared
parameters (:class:`strategies.params.Param`, run-config keys ``<name>-<param>``), plus
one :func:`register_strategy` line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from strategies.errors import UnknownStrategyError
from strategies.fedavg import UpdateSpaceFedAvg
from strategies.krum_strategy import MULTIKRUM_PARAMS, Krum, MultiKrum
from strategies.params import Param, check_declared_keywords

StrategyFactory = Callable[..., UpdateSpaceFedAvg]
# Keywords every factory may take that come from the run, not from the method's params.
CONTEXT = ("num_byzantine",)


@dataclass(frozen=True)
class StrategySpec:
    """One registered strategy: ``factory(num_byzantine=f, **params, **fedavg_kwargs)``."""

    name: str
    factory: StrategyFactory
    params: tuple[Param, ...] = ()


STRATEGIES: dict[str, StrategySpec] = {}


def register_strategy(name: str, factory: StrategyFactory,
                      params: tuple[Param, ...] = ()) -> StrategySpec:
    """Register ``factory`` with its declared ``params`` as ``name``; refuse a taken name."""
    if name in STRATEGIES:
        raise ValueError(f"strategy {name!r} is already registered")
    check_declared_keywords(f"strategy {name!r}", factory, params, CONTEXT)
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
                  **fedavg_kwargs: Any) -> UpdateSpaceFedAvg:
    """Build the strategy ``name``; ``params`` by keyword (``{"m": 3}``), defaults otherwise."""
    spec = get_strategy(name)
    return spec.factory(num_byzantine=num_byzantine, **(params or {}), **fedavg_kwargs)


def _fedavg(*, num_byzantine: int = 0, **kwargs: Any) -> UpdateSpaceFedAvg:
    return UpdateSpaceFedAvg(**kwargs)  # FedAvg declares no f: it tolerates none


def _krum(*, num_byzantine: int = 0, **kwargs: Any) -> UpdateSpaceFedAvg:
    return Krum(num_byzantine=num_byzantine, **kwargs)


def _multikrum(*, num_byzantine: int = 0, m: int = MULTIKRUM_PARAMS[0].default,
               **kwargs: Any) -> UpdateSpaceFedAvg:
    return MultiKrum(num_byzantine=num_byzantine, num_selected=m, **kwargs)


register_strategy("fedavg", _fedavg)
register_strategy("krum", _krum)
register_strategy("multikrum", _multikrum, MULTIKRUM_PARAMS)
