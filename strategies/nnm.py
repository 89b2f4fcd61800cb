"""Nearest-neighbour mixing, NNM (Allouah et al., AISTATS 2023).

Allouah, Farhadkhani, Guerraoui, Gupta, Pinot and Stephan, "Fixing by Mixing: A Recipe
for Optimal Byzantine ML under Heterogeneity".

A pre-aggregation: every update is replaced by the mean of its ``n - f`` nearest
updates (itself included, at distance 0):

    y_i = (1 / (n - f)) * sum_{j in N_i} d_j,   N_i = the n - f rows nearest d_i

then any rule aggregates ``y_1..y_n``. Ties in distance go to the lower row. Row ``i``
of the output stands for client ``i``. Needs ``f < n``.
"""

from __future__ import annotations

import numpy as np

from strategies.contract import Preaggregation, PreaggregationResult
from strategies.errors import ByzantineSizeError
from strategies.krum import pairwise_sq_distances


def nearest_neighbour_mixing(updates: np.ndarray, num_byzantine: int) -> np.ndarray:
    """Return the mixed ``(n, d)`` rows, in the input's float dtype.

    >>> nearest_neighbour_mixing(np.array([[0.0], [1.0], [10.0]]), 1)
    array([[0.5],
           [0.5],
           [5.5]])
    """
    n = updates.shape[0]
    check_size(n, num_byzantine)
    distances = pairwise_sq_distances(updates)
    nearest = np.argsort(distances, axis=1, kind="stable")[:, : n - num_byzantine]
    mixing = np.zeros((n, n))
    np.put_along_axis(mixing, nearest, 1.0 / (n - num_byzantine), axis=1)
    return (mixing @ updates.astype(np.float64)).astype(updates.dtype)


def check_size(num_clients: int, num_byzantine: int) -> None:
    """NNM averages ``n - f >= 1`` neighbours."""
    if not 0 <= num_byzantine < num_clients:
        raise ByzantineSizeError(f"nnm needs 0 <= f < n; got n={num_clients}, f={num_byzantine}. "
                                 "Sample more clients per round or declare a smaller "
                                 "num-byzantine.")


def preaggregate(updates: np.ndarray, *, num_byzantine: int,
                 rng: np.random.Generator) -> PreaggregationResult:
    """The registry's adapter (``rng`` unused: NNM is deterministic)."""
    mixed = nearest_neighbour_mixing(updates, num_byzantine)
    return PreaggregationResult(mixed, [[i] for i in range(len(updates))])


PREAGGREGATION = Preaggregation("nnm", preaggregate, check_size, lambda n, f, **p: n,
                                description="nearest-neighbour mixing (Allouah et al. 2023)")
