"""Adaptive robust clipping, ARC (Allouah, Guerraoui, Gupta, Jellouli, Rizk, Stephan, 2024).

Paper: "The Vital Role of Gradient Clipping in Byzantine-Resilient Distributed
Learning" (arXiv:2405.14432).

A pre-aggregation: with ``k = floor(2 (f / n) (n - f))``, the ``k`` updates of largest
norm are clipped to the norm of the largest of the others (the ``(k+1)``-th largest):

    y_i = d_i * min(1, ||d_pi(k+1)|| / ||d_i||)  for the k longest,  y_i = d_i otherwise

``k`` is computed in integers (``2 f (n - f) // n``), so no float rounding moves it.
Ties in norm go to the higher row among the clipped (a stable sort by norm, as
ByzFL's). Row ``i`` stands for client ``i``; ``clipped`` lists the rows scaled.
"""

from __future__ import annotations

import numpy as np

from strategies.chunked import row_norms
from strategies.clipping import clip_rows
from strategies.contract import Preaggregation, PreaggregationResult
from strategies.errors import ByzantineSizeError


def num_clipped(num_clients: int, num_byzantine: int) -> int:
    """``floor(2 f (n - f) / n)``.

    >>> num_clipped(10, 2), num_clipped(10, 0), num_clipped(25, 6)
    (3, 0, 9)
    """
    return 2 * num_byzantine * (num_clients - num_byzantine) // num_clients


def adaptive_robust_clipping(updates: np.ndarray, num_byzantine: int
                             ) -> tuple[np.ndarray, list[int]]:
    """Return the rows after ARC and the rows it clipped.

    >>> adaptive_robust_clipping(np.array([[1.0, 0.0], [0.0, 2.0], [30.0, 40.0]]), 1)
    (array([[1. , 0. ],
           [0. , 2. ],
           [1.2, 1.6]]), [2])
    """
    n = updates.shape[0]
    check_size(n, num_byzantine)
    k = num_clipped(n, num_byzantine)
    if k == 0:
        return updates.copy(), []
    norms = row_norms(updates)
    order = np.argsort(norms, kind="stable")  # ascending; the k longest are last
    thresholds = np.full(n, np.inf)
    thresholds[order[n - k:]] = norms[order[n - k - 1]]
    return clip_rows(updates, thresholds)


def check_size(num_clients: int, num_byzantine: int) -> None:
    """ARC needs ``0 <= f <= n``."""
    if not 0 <= num_byzantine <= num_clients or num_clients < 1:
        raise ByzantineSizeError(f"arc needs 0 <= f <= n; got n={num_clients}, "
                                 f"f={num_byzantine}.")


def preaggregate(updates: np.ndarray, *, num_byzantine: int,
                 rng: np.random.Generator) -> PreaggregationResult:
    """The registry's adapter (``rng`` unused)."""
    out, clipped = adaptive_robust_clipping(updates, num_byzantine)
    return PreaggregationResult(out, [[i] for i in range(len(updates))], clipped)


PREAGGREGATION = Preaggregation("arc", preaggregate, check_size, lambda n, f, **p: n,
                                description="adaptive robust clipping (Allouah et al. 2024)")
