"""One round's aggregation as pure math: pre-aggregation, the rule, the server optimiser.

    updates --pre-aggregation steps, in order--> rows --rule--> aggregate --server step--> step

:class:`AggregationPipeline` holds the configuration and the state carried across
rounds (centered clipping's centre, the server momentum buffer) and maps what the
rule did (rows selected, clipped, scored) back to the clients, through the rows each
pre-aggregated row stands for. The Flower strategy (:mod:`strategies.fedavg`) calls
:meth:`AggregationPipeline.aggregate` once per round; tests and notebooks can too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from strategies.contract import RuleResult
from strategies.errors import RuleParameterError
from strategies.rules import (
    aggregate_detailed,
    get_preaggregation,
    get_rule,
    preaggregate_detailed,
)
from strategies.server_optimizer import server_step

MOMENTUM_STATE = "server-momentum-buffer"
# The largest round size searched for a rule's smallest allowed one (min_clients).
_MAX_SEARCHED_CLIENTS = 100_000


@dataclass
class AggregationPipeline:
    """Pre-aggregation steps, then ``rule``, then the server optimiser (see the module)."""

    rule: str = "fedavg"
    num_byzantine: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)
    preaggregation: Sequence[tuple[str, Mapping[str, Any]]] = ()
    server_learning_rate: float = 1.0
    server_momentum: float = 0.0
    seed: int = 0
    state: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get_rule(self.rule)
        for name, _ in self.preaggregation:
            get_preaggregation(name)
        if not self.server_learning_rate > 0:
            raise RuleParameterError(
                f"server-learning-rate must be > 0; got {self.server_learning_rate}")
        if not 0.0 <= self.server_momentum < 1.0:
            raise RuleParameterError(
                f"server-momentum must be in [0, 1); got {self.server_momentum}")

    def rows_after_preaggregation(self, num_clients: int) -> int:
        """The rows the rule sees from ``num_clients`` updates; raise if a step cannot run."""
        rows = num_clients
        for name, params in self.preaggregation:
            step = get_preaggregation(name)
            step.check_size(rows, self.num_byzantine, **params)
            rows = step.output_size(rows, self.num_byzantine, **params)
        return rows

    def check_size(self, num_clients: int) -> None:
        """Raise (a ``ByzantineSizeError``, ...) unless a round of ``num_clients`` can run."""
        rows = self.rows_after_preaggregation(num_clients)
        defaults = {p.kwarg: p.default for p in get_rule(self.rule).params}
        get_rule(self.rule).check_size(rows, self.num_byzantine, **{**defaults, **self.params})

    def min_clients(self) -> int:
        """The fewest updates a round can aggregate (e.g. ``2f + 3`` for Krum)."""
        for n in range(1, _MAX_SEARCHED_CLIENTS):
            try:
                self.check_size(n)
            except ValueError:
                continue
            return n
        return _MAX_SEARCHED_CLIENTS

    def aggregate(self, updates: np.ndarray, weights: Sequence[float], server_round: int
                  ) -> RuleResult:
        """The round's step, with what the rule did in terms of the rows of ``updates``."""
        rows, origins, weights, clipped = self._preaggregate(updates, weights, server_round)
        rule = get_rule(self.rule)
        state = {key: self.state[key] for key in rule.state if key in self.state}
        result = aggregate_detailed(self.rule, rows, num_byzantine=self.num_byzantine,
                                    weights=weights if rule.count_weighted else None,
                                    **self.params, **state)
        self.state.update(result.state)
        step, buffer = server_step(result.update, self.state.get(MOMENTUM_STATE),
                                   self.server_learning_rate, self.server_momentum)
        if buffer is not None:
            self.state[MOMENTUM_STATE] = buffer
        identity = origins == [[i] for i in range(len(updates))]
        return RuleResult(
            step,
            selected=None if result.selected is None else _clients(result.selected, origins),
            scores=result.scores if identity else None,
            clipped=sorted(set(clipped) | set(_clients(result.clipped or [], origins))),
            iterations=result.iterations, state=result.state)

    def _preaggregate(self, updates: np.ndarray, weights: Sequence[float], server_round: int
                      ) -> tuple[np.ndarray, list[list[int]], list[float], list[int]]:
        rows, origins = updates, [[i] for i in range(len(updates))]
        weights, clipped = [float(w) for w in weights], set()
        for position, (name, params) in enumerate(self.preaggregation):
            rng = np.random.default_rng([self.seed, server_round, position])
            out = preaggregate_detailed(name, rows, num_byzantine=self.num_byzantine, rng=rng,
                                        **params)
            clipped |= set(_clients(out.clipped or [], origins))
            weights = [sum(weights[r] for r in members) for members in out.origins]
            origins = [_clients(members, origins) for members in out.origins]
            rows = out.updates
        return rows, origins, weights, sorted(clipped)


def _clients(rows: Sequence[int], origins: list[list[int]]) -> list[int]:
    """The clients (input rows) behind ``rows`` of a pre-aggregated matrix, sorted."""
    return sorted({client for row in rows for client in origins[row]})
