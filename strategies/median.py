"""Coordinate-wise median (Yin, Chen, Kannan, Bartlett, ICML 2018).

Paper: "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates".

    median(d_1..d_n)_j = median of {d_1j, ..., d_nj}      for every coordinate j

with the mean of the two middle values when ``n`` is even (as ``np.median`` and
Flower's ``FedMedian``). Every client counts once: example counts are self-reported,
so weighting by them would hand an attacker the median. The median of a coordinate
stays within the honest values' range while fewer than half the updates are
Byzantine, hence the size rule ``n >= 2f + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from strategies.contract import Rule, RuleResult
from strategies.coordinatewise import reduce_sorted_columns
from strategies.preconditions import check_min_clients, check_update_matrix


def coordinate_median(updates: np.ndarray) -> np.ndarray:
    """Return the coordinate-wise median of the rows of ``updates`` (float64).

    >>> coordinate_median(np.array([[0.0, 4.0], [1.0, -1.0], [9.0, 2.0], [3.0, 3.0]]))
    array([2. , 2.5])
    """
    check_update_matrix(updates)
    n = updates.shape[0]
    if n % 2:
        return reduce_sorted_columns(updates, lambda s: s[:, n // 2].astype(np.float64))
    return reduce_sorted_columns(
        updates, lambda s: 0.5 * (s[:, n // 2 - 1].astype(np.float64) + s[:, n // 2]))


def check_size(num_clients: int, num_byzantine: int) -> None:
    """The median is robust while Byzantine updates are fewer than half: ``n >= 2f + 1``."""
    check_min_clients("median", num_clients, num_byzantine, 2 * num_byzantine + 1, "2f + 1")


def rule(updates: np.ndarray, *, num_byzantine: int,
         weights: Sequence[float] | None) -> RuleResult:
    """The registry's adapter: every row contributes (``selected`` is ``None``)."""
    return RuleResult(coordinate_median(updates))


RULES = (Rule("median", rule, check_size, description="coordinate-wise median (Yin et al. 2018)"),)
