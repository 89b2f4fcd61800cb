"""Minimum-diameter averaging (El Mhamdi, Guerraoui, Rouault, 2020).

Paper: "Distributed Momentum for Byzantine-resilient Stochastic Gradient Descent"
(ICLR 2021; first as arXiv:2003.00010, 2020), MDA.

Among all subsets ``S`` of ``n - f`` updates, take one of smallest diameter
``max_{i, j in S} ||d_i - d_j||`` and average it:

    S* in argmin_{|S| = n - f} max_{i, j in S} ||d_i - d_j||,    mda = (1/|S*|) sum_{i in S*} d_i

There are ``C(n, f)`` subsets, so MDA is for small ``n``: more than ``max-subsets`` of
them is an error naming the limit. Ties go to the first subset in lexicographic order
of its rows (as ByzFL, whose ``MDA`` enumerates them the same way). Needs ``n >= 2f + 1``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from strategies.chunked import weighted_row_sum
from strategies.contract import Rule, RuleResult
from strategies.errors import ByzantineSizeError
from strategies.krum import pairwise_sq_distances
from strategies.params import Param, at_least
from strategies.preconditions import check_min_clients, check_update_matrix

MAX_SUBSETS = Param("max-subsets", 200_000, "most subsets C(n, f) MDA may enumerate",
                    at_least(1), label="MDA subset limit")
PARAMS = (MAX_SUBSETS,)
_BATCH = 4096  # subsets whose diameters are computed at once


def min_diameter_subset(distances: np.ndarray, size: int) -> tuple[int, ...]:
    """The first subset of ``size`` rows (lexicographic) of smallest diameter.

    >>> d = np.array([[0, 1, 9], [1, 0, 8], [9, 8, 0]], dtype=float)
    >>> min_diameter_subset(d, 2)
    (0, 1)
    """
    best, best_diameter = None, np.inf
    subsets = itertools.combinations(range(distances.shape[0]), size)
    while batch := list(itertools.islice(subsets, _BATCH)):
        rows = np.asarray(batch)
        diameters = distances[rows[:, :, None], rows[:, None, :]].max(axis=(1, 2))
        position = int(np.argmin(diameters))  # the first of equal diameters
        if diameters[position] < best_diameter:
            best, best_diameter = batch[position], diameters[position]
    return best


def mda(updates: np.ndarray, num_byzantine: int,
        max_subsets: int = MAX_SUBSETS.default) -> tuple[np.ndarray, list[int]]:
    """Return the MDA aggregate (float64) and the rows of the subset averaged.

    >>> agg, rows = mda(np.array([[0.0], [1.0], [2.0], [50.0]]), 1)
    >>> agg, rows
    (array([1.]), [0, 1, 2])
    """
    check_update_matrix(updates)
    check_size(updates.shape[0], num_byzantine, max_subsets)
    n = updates.shape[0]
    rows = list(min_diameter_subset(pairwise_sq_distances(updates), n - num_byzantine))
    coefficients = np.zeros(n)
    coefficients[rows] = 1.0 / len(rows)
    return weighted_row_sum(updates, coefficients), rows


def check_size(num_clients: int, num_byzantine: int,
               max_subsets: int = MAX_SUBSETS.default) -> None:
    """``n >= 2f + 1``, and at most ``max_subsets`` subsets ``C(n, f)`` to enumerate."""
    check_min_clients("mda", num_clients, num_byzantine, 2 * num_byzantine + 1, "2f + 1")
    count = math.comb(num_clients, num_byzantine)
    if count > max_subsets:
        raise ByzantineSizeError(
            f"mda would enumerate C(n, f) = C({num_clients}, {num_byzantine}) = {count} "
            f"subsets, more than mda-max-subsets = {max_subsets}. MDA is for small n: sample "
            "fewer clients per round, declare a smaller num-byzantine, raise "
            "mda-max-subsets, or use another rule (krum, bulyan, geometric-median).")


def rule(updates: np.ndarray, *, num_byzantine: int, weights: Sequence[float] | None,
         max_subsets: int = MAX_SUBSETS.default) -> RuleResult:
    """The registry's adapter: the aggregate and the subset it averaged."""
    aggregate, rows = mda(updates, num_byzantine, max_subsets)
    return RuleResult(aggregate, selected=rows)


RULES = (Rule("mda", rule, check_size, PARAMS,
              description="average of the n - f updates of smallest diameter (El Mhamdi et "
                          "al. 2020)"),)
