"""Krum and Multi-Krum as Flower strategies (math in :mod:`strategies.krum`).

Both subclass :class:`strategies.fedavg.UpdateSpaceFedAvg`, so rejection of
malformed results, the omniscient hook and round reports are shared; they
differ from FedAvg only in :meth:`aggregate_updates` and the size rule
``n >= 2f + 3`` (Blanchard et al., NeurIPS 2017), checked by
:func:`strategies.preconditions.check_krum_size` before the first round and
again after rejections in every round.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from strategies.fedavg import AggregateResult, UpdateSpaceFedAvg
from strategies.krum import krum_scores, lowest_scores
from strategies.params import Param, at_least
from strategies.preconditions import check_krum_size

MULTIKRUM_PARAMS = (Param("m", 0, "updates Multi-Krum averages; 0: n - f", at_least(0),
                          label="Multi-Krum m"),)


class MultiKrum(UpdateSpaceFedAvg):
    """Average of the ``num_selected`` updates with the lowest Krum scores.

    ``num_selected = 0`` means ``n - f`` (all but the declared Byzantine count),
    the common choice of El Mhamdi et al. (ICML 2018).
    """

    def __init__(self, *, num_byzantine: int, num_selected: int = 0, **kwargs: Any) -> None:
        if num_byzantine < 0 or num_selected < 0:
            raise ValueError(f"num_byzantine and num_selected must be >= 0; got "
                             f"f={num_byzantine}, m={num_selected}")
        super().__init__(**kwargs)
        self.num_byzantine = num_byzantine
        self.num_selected = num_selected

    def __repr__(self) -> str:
        return f"{type(self).__name__}(f={self.num_byzantine}, m={self.num_selected})"

    def min_results(self) -> int:
        """Krum needs ``n >= 2f + 3`` updates."""
        return 2 * self.num_byzantine + 3

    def check_num_clients(self, num_clients: int) -> None:
        """Refuse a round size that violates ``n >= 2f + 3``."""
        check_krum_size(num_clients, self.num_byzantine)

    def selection_size(self, num_updates: int) -> int:
        """How many lowest-score updates to average this round."""
        m = self.num_selected or num_updates - self.num_byzantine
        return min(m, num_updates)

    def aggregate_updates(self, updates: np.ndarray, num_examples: list[int]) -> AggregateResult:
        """Select the lowest-score updates (ties to the lower row) and average them."""
        scores = krum_scores(updates, self.num_byzantine)
        selected = [int(i) for i in lowest_scores(scores, self.selection_size(len(scores)))]
        return AggregateResult(np.asarray(updates[selected], dtype=np.float64).mean(axis=0),
                               selected, [float(s) for s in scores])


class Krum(MultiKrum):
    """Krum: the single update with the lowest score (Multi-Krum with m = 1)."""

    def __init__(self, *, num_byzantine: int, **kwargs: Any) -> None:
        super().__init__(num_byzantine=num_byzantine, num_selected=1, **kwargs)
