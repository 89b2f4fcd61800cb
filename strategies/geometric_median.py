"""Geometric median by the smoothed Weiszfeld algorithm (RFA).

Paper: Pillutla, Kakade and Harchaoui, "Robust Aggregation for Federated Learning",
IEEE Transactions on Signal Processing 2022 (RFA, Algorithm 2).

The geometric median minimizes the sum of distances
``F(z) = sum_i a_i ||z - d_i||`` (weights ``a_i``, uniform unless given). Smoothed
Weiszfeld iterates, from the weighted mean,

    beta_i = a_i / max(nu, ||z - d_i||),      z <- sum_i beta_i d_i / sum_i beta_i

which never increases the smoothed objective. It starts from the weighted mean (as RFA)
and stops after ``max-iterations`` or when an iteration both lowers ``F`` by at most
``tolerance * F`` (relative) and moves ``z`` by at most ``tolerance`` times the median
distance from ``z`` to the updates. The second condition is ours: one far outlier
(1e9) dominates ``F``, so a relative decrease alone stops while ``z`` is still far from
every honest update; the median distance is the honest updates' own scale. The
iterations used are reported. Unlike implementations that run a fixed 3 iterations (ByzFL's
default ``T = 3``), the result is the median to a stated tolerance.

Cost: one pass over the data per iteration (:func:`strategies.chunked.weiszfeld_pass`):
the new ``z`` is computed one chunk of columns at a time, as the old one plus a step
computed from the differences ``d_i - z`` (so float32 updates give a ``z`` accurate at
the scale of those differences), and the distances to it are summed from the same chunk
while it is in cache.

The geometric median has breakdown point 1/2: with fewer than half the updates
Byzantine it stays in a bounded region around the honest ones (``n >= 2f + 1``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from strategies.chunked import weiszfeld_pass
from strategies.contract import Rule, RuleResult
from strategies.errors import RuleParameterError
from strategies.params import Param, at_least, positive_finite
from strategies.preconditions import check_min_clients, check_update_matrix

TOLERANCE = Param("tolerance", 1e-6, "stop when an iteration lowers the sum of distances by "
                  "at most this fraction", positive_finite, label="Weiszfeld tolerance")
MAX_ITERATIONS = Param("max-iterations", 1000, "most Weiszfeld iterations", at_least(1),
                       label="Weiszfeld iterations")
NU = Param("nu", 1e-6, "smoothing: distances below nu count as nu", positive_finite,
           label="Weiszfeld nu")
PARAMS = (TOLERANCE, MAX_ITERATIONS, NU)


def geometric_median(updates: np.ndarray, weights: Sequence[float] | None = None, *,
                     tolerance: float = TOLERANCE.default,
                     max_iterations: int = MAX_ITERATIONS.default,
                     nu: float = NU.default) -> tuple[np.ndarray, int]:
    """Return the smoothed-Weiszfeld geometric median (float64) and the iterations used.

    >>> z, _ = geometric_median(np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [1e9, 1e9]]))
    >>> z.round(5)  # the unit vectors to the four points sum to zero at (1, 1)
    array([1., 1.])
    """
    check_update_matrix(updates)
    n = updates.shape[0]
    alpha = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, dtype=np.float64)
    if alpha.shape != (n,) or np.any(alpha < 0) or not alpha.sum() > 0:
        raise RuleParameterError(f"geometric median weights must be {n} numbers >= 0 with a "
                                 f"positive sum; got {weights!r}")
    alpha = alpha / alpha.sum()
    with np.errstate(over="ignore", invalid="ignore"):
        z, dist = weiszfeld_pass(updates, np.zeros(updates.shape[1]), alpha)  # the mean
        objective, iterations = float(alpha @ dist), 0
        while iterations < max_iterations:
            beta = alpha / np.maximum(dist, nu)
            previous_z = z
            z, dist = weiszfeld_pass(updates, previous_z, beta / beta.sum())
            previous, objective = objective, float(alpha @ dist)
            iterations += 1
            step = float(np.linalg.norm(z - previous_z))
            if (previous - objective <= tolerance * objective
                    and step <= tolerance * float(np.median(dist))):
                break
    if not np.all(np.isfinite(z)):
        raise RuleParameterError("geometric median diverged (non-finite updates?); reject "
                                 "non-finite results before aggregating")
    return z, iterations


def check_size(num_clients: int, num_byzantine: int, **params: object) -> None:
    """Breakdown point 1/2: ``n >= 2f + 1``."""
    check_min_clients("geometric-median", num_clients, num_byzantine, 2 * num_byzantine + 1,
                      "2f + 1")


def rule(updates: np.ndarray, *, num_byzantine: int, weights: Sequence[float] | None,
         tolerance: float = TOLERANCE.default, max_iterations: int = MAX_ITERATIONS.default,
         nu: float = NU.default) -> RuleResult:
    """The registry's adapter: the median and the iterations it took."""
    z, iterations = geometric_median(updates, weights, tolerance=tolerance,
                                     max_iterations=max_iterations, nu=nu)
    return RuleResult(z, iterations=iterations)


RULES = (Rule("geometric-median", rule, check_size, PARAMS, weighted=True,
              description="smoothed Weiszfeld geometric median (RFA, Pillutla et al. 2022)"),)
