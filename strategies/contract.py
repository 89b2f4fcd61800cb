"""What an aggregation rule and a pre-aggregation are: their results and registrations.

Kept apart from :mod:`strategies.rules` (the registry) so that every rule module can
import these types while the registry imports every rule module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from strategies.params import Param

# Keywords every rule adapter takes from the caller, not from its declared params.
RULE_CONTEXT = ("num_byzantine", "weights")
PREAGGREGATION_CONTEXT = ("num_byzantine", "rng")


@dataclass
class RuleResult:
    """What a rule returned and did (row indices refer to its input matrix)."""

    update: np.ndarray  # (d,) float64: the aggregate update
    selected: list[int] | None = None  # rows the rule averaged; None: all rows contribute
    scores: list[float] | None = None  # per-row scores (Krum)
    clipped: list[int] | None = None  # rows whose contribution was clipped
    iterations: int | None = None  # iterations an iterative rule used
    state: dict[str, np.ndarray] = field(default_factory=dict)  # for the next round


@dataclass
class PreaggregationResult:
    """The rows a pre-aggregation produced, and where each came from."""

    updates: np.ndarray  # (n', d)
    origins: list[list[int]]  # origins[j]: the input rows output row j stands for
    clipped: list[int] | None = None  # input rows it clipped


@dataclass(frozen=True)
class Rule:
    """A registered aggregation rule.

    ``weighted``: it accepts ``weights``. ``count_weighted``: the Flower strategy passes
    the clients' example counts as weights (FedAvg only: counts are self-reported, so a
    robust rule gives every client weight 1).
    """

    name: str
    fn: Callable[..., RuleResult]
    check_size: Callable[..., None]  # check_size(n, f, **params): raise if n is too small
    params: tuple[Param, ...] = ()
    weighted: bool = False
    count_weighted: bool = False
    description: str = ""
    state: tuple[str, ...] = ()  # keywords of fn that carry state across rounds


@dataclass(frozen=True)
class Preaggregation:
    """A registered pre-aggregation; ``output_size(n, **params)`` is its row count."""

    name: str
    fn: Callable[..., PreaggregationResult]
    check_size: Callable[..., None]
    output_size: Callable[..., int]
    params: tuple[Param, ...] = ()
    description: str = ""
