"""The aggregation strategies, registered by name (the ``strategy`` run-config key).

Adding an aggregator is one file with its math and Flower class plus one
:func:`register_strategy` line here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from strategies.errors import UnknownStrategyError
from strategies.fedavg import UpdateSpaceFedAvg
from strategies.krum_strategy import Krum, MultiKrum

StrategyFactory = Callable[..., UpdateSpaceFedAvg]
STRATEGIES: dict[str, StrategyFactory] = {}


def register_strategy(name: str, factory: StrategyFactory) -> None:
    """Register ``factory(num_byzantine=, num_selected=, **fedavg_kwargs)`` as ``name``."""
    if name in STRATEGIES:
        raise ValueError(f"strategy {name!r} is already registered")
    STRATEGIES[name] = factory


def strategy_names() -> list[str]:
    """The registered names, sorted."""
    return sorted(STRATEGIES)


def make_strategy(name: str, *, num_byzantine: int = 0, num_selected: int = 0,
                  **fedavg_kwargs: Any) -> UpdateSpaceFedAvg:
    """Build the strategy ``name``; unknown names list the valid ones."""
    try:
        factory = STRATEGIES[name]
    except KeyError:
        raise UnknownStrategyError(
            f"unknown strategy {name!r}; expected one of {strategy_names()}") from None
    return factory(num_byzantine=num_byzantine, num_selected=num_selected, **fedavg_kwargs)


register_strategy("fedavg", lambda num_byzantine, num_selected, **kw: UpdateSpaceFedAvg(**kw))
register_strategy("krum", lambda num_byzantine, num_selected, **kw: Krum(
    num_byzantine=num_byzantine, **kw))
register_strategy("multikrum", lambda num_byzantine, num_selected, **kw: MultiKrum(
    num_byzantine=num_byzantine, num_selected=num_selected, **kw))
