"""Federated averaging of updates, weighted by example count.

McMahan et al., AISTATS 2017, "Communication-Efficient Learning of Deep Networks
from Decentralized Data":

    aggregate(d_1..d_n) = sum_i (n_i / N) d_i,   N = sum_i n_i

where ``d_i`` is client i's update and ``n_i`` its number of training examples.
Averaging updates and then adding them to ``w`` equals averaging the weights
``w_i`` (the weights sum to one), so this is exactly Flower's FedAvg.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from strategies.contract import Rule, RuleResult
from strategies.preconditions import check_min_clients


def weighted_mean_update(updates: np.ndarray, num_examples: Sequence[int]) -> np.ndarray:
    """Return the example-weighted mean of the rows of ``updates`` (float64).

    >>> weighted_mean_update(np.array([[1.0, 0.0], [0.0, 3.0]]), [1, 3])
    array([0.25, 2.25])
    """
    counts = np.asarray(num_examples, dtype=np.float64)
    if updates.ndim != 2 or len(counts) != updates.shape[0] or len(counts) == 0:
        raise ValueError(f"need one example count per update row; got {len(counts)} counts "
                         f"for updates of shape {updates.shape}")
    if np.any(counts < 0) or counts.sum() <= 0:
        raise ValueError(f"example counts must be >= 0 with a positive total; got {counts}")
    return (counts / counts.sum()) @ np.asarray(updates, dtype=np.float64)


def check_size(num_clients: int, num_byzantine: int) -> None:
    """The mean needs one update (it tolerates no Byzantine one, whatever f says)."""
    check_min_clients("fedavg", num_clients, num_byzantine, 1, "1")


def rule(updates: np.ndarray, *, num_byzantine: int,
         weights: Sequence[float] | None) -> RuleResult:
    """The registry's adapter: weighted by ``weights`` (example counts), else uniform."""
    counts = np.ones(len(updates)) if weights is None else weights
    return RuleResult(weighted_mean_update(updates, counts))


RULES = (Rule("fedavg", rule, check_size, weighted=True, count_weighted=True,
              description="example-weighted mean (McMahan et al. 2017)"),)
