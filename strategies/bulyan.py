"""Bulyan (El Mhamdi, Guerraoui, Rouault, ICML 2018).

Paper: "The Hidden Vulnerability of Distributed Learning in Byzantium".

With ``n`` updates and ``f`` declared Byzantine (``n >= 4f + 3``):

1. **Selection.** ``theta = n - 2f`` updates are chosen by repeated Krum: Krum picks
   one update of the remaining set, which leaves the set, until ``theta`` are chosen.
2. **Aggregation.** For every coordinate ``j``, the ``beta = theta - 2f`` chosen
   values closest to their median are averaged:

       bulyan_j = (1 / beta) * sum of the beta values d_ij (i chosen) nearest median_j

Conventions, where the paper leaves them open:

- The inner Krum runs on shrinking sets of ``k = n, n-1, ..., 2f + 1`` updates and
  scores each by its ``max(k - f - 2, 1)`` nearest others: below ``k = f + 3`` the
  paper's ``k - f - 2`` neighbours would be none, and we keep one, as Flower's
  ``aggregate_bulyan`` does. Ties in score go to the lower row, as in :mod:`strategies.krum`.
  All distances come from one accurate matrix (:func:`strategies.krum.pairwise_sq_distances`,
  one Gram matrix), not recomputed for each of the ``theta`` picks.
- "The beta closest to the median": per coordinate they are a window of the sorted
  values; of two equally close windows the one of smaller values is taken (Flower's
  ``argpartition`` leaves such ties to its introselect). Where no two values tie in
  distance, the result equals Flower's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from strategies.contract import Rule, RuleResult
from strategies.coordinatewise import reduce_sorted_columns
from strategies.krum import pairwise_sq_distances, scores_from_distances
from strategies.preconditions import check_min_clients, check_update_matrix


def bulyan_selection(distances: np.ndarray, num_byzantine: int) -> list[int]:
    """The ``theta = n - 2f`` rows repeated Krum chooses, in the order chosen.

    >>> d = np.array([[0, 1, 1, 4, 99], [1, 0, 1, 4, 99], [1, 1, 0, 4, 99],
    ...               [4, 4, 4, 0, 99], [99, 99, 99, 99, 0]], dtype=float)
    >>> bulyan_selection(d, 1)
    [0, 1, 2]
    """
    remaining = list(range(distances.shape[0]))
    chosen: list[int] = []
    for _ in range(distances.shape[0] - 2 * num_byzantine):
        k = len(remaining)
        if k == 1:
            chosen.append(remaining.pop())
            break
        sub = distances[np.ix_(remaining, remaining)]
        scores = scores_from_distances(sub, max(k - num_byzantine - 2, 1))
        chosen.append(remaining.pop(int(np.argmin(scores))))
    return chosen


def _mean_closest_to_median(sorted_values: np.ndarray, beta: int) -> np.ndarray:
    """Per row of sorted values: the float64 mean of the ``beta`` nearest the row's median."""
    count = sorted_values.shape[1]
    values = sorted_values.astype(np.float64)
    half = count // 2
    median = values[:, half] if count % 2 else 0.5 * (values[:, half - 1] + values[:, half])
    # Window j holds sorted values j .. j + beta - 1; its farthest value from the median
    # is at one of its ends. The nearest beta values are the window whose farthest is
    # nearest (argmin: the first, i.e. smaller values, on a tie).
    spans = np.maximum(median[:, None] - values[:, :count - beta + 1],
                       values[:, beta - 1:] - median[:, None])
    start = np.argmin(spans, axis=1)
    prefix = np.zeros((values.shape[0], count + 1))
    np.cumsum(values, axis=1, out=prefix[:, 1:])
    rows = np.arange(values.shape[0])
    return (prefix[rows, start + beta] - prefix[rows, start]) / beta


def bulyan(updates: np.ndarray, num_byzantine: int) -> tuple[np.ndarray, list[int]]:
    """Return Bulyan's aggregate (float64) and the rows its selection chose.

    >>> u = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [100.0]])
    >>> agg, chosen = bulyan(u, 1)  # theta = 6 chosen, beta = 4 nearest the median 2.5
    >>> agg, chosen
    (array([2.5]), [2, 4, 3, 1, 5, 0])
    """
    check_update_matrix(updates)
    check_size(updates.shape[0], num_byzantine)
    chosen = bulyan_selection(pairwise_sq_distances(updates), num_byzantine)
    beta = len(chosen) - 2 * num_byzantine
    rows = np.sort(np.asarray(chosen))
    aggregate = reduce_sorted_columns(updates, lambda s: _mean_closest_to_median(s, beta),
                                      rows)
    return aggregate, chosen


def check_size(num_clients: int, num_byzantine: int) -> None:
    """Bulyan needs ``n >= 4f + 3``."""
    check_min_clients("bulyan", num_clients, num_byzantine, 4 * num_byzantine + 3, "4f + 3")


def rule(updates: np.ndarray, *, num_byzantine: int,
         weights: Sequence[float] | None) -> RuleResult:
    """The registry's adapter: the aggregate and the ``theta`` rows chosen."""
    aggregate, chosen = bulyan(updates, num_byzantine)
    return RuleResult(aggregate, selected=sorted(chosen))


RULES = (Rule("bulyan", rule, check_size,
              description="Krum selection then coordinate-wise trimming (El Mhamdi et al. 2018)"),)
