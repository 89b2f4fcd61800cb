"""Centered clipping (Karimireddy, He, Jaggi, ICML 2021).

Paper: "Learning from History for Byzantine Robust Optimization".

From a centre ``v_0`` (the previous round's aggregate; zero in the first round),
``L`` iterations of

    v_{l+1} = v_l + (1/n) sum_i clip_tau(d_i - v_l),   clip_tau(x) = x * min(1, tau / ||x||)

and the aggregate is ``v_L``. An update farther than ``tau`` from the centre moves it
by at most ``tau / n``, whatever its size. The rule is stateful: the Flower strategy
passes the previous aggregate as ``center`` and keeps the new one (also in the
checkpoint, so a resumed run continues identically). ``clipped`` reports the rows
farther than ``tau`` from the centre in the last iteration.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from strategies.chunked import distances_to, weighted_row_sum
from strategies.contract import Rule, RuleResult
from strategies.errors import RuleParameterError
from strategies.params import Param, at_least, positive_finite
from strategies.preconditions import check_min_clients, check_update_matrix

TAU = Param("tau", 1.0, "clipping radius around the centre (the previous aggregate)",
            positive_finite, label="centered-clipping tau")
ITERATIONS = Param("iterations", 1, "clipping iterations L per round", at_least(1),
                   label="centered-clipping L")
PARAMS = (TAU, ITERATIONS)
def centered_clipping(updates: np.ndarray, center: np.ndarray | None = None, *,
                      tau: float = TAU.default, iterations: int = ITERATIONS.default
                      ) -> tuple[np.ndarray, list[int]]:
    """Return the clipped aggregate (float64) and the rows clipped in the last iteration.

    >>> agg, clipped = centered_clipping(np.array([[1.0, 0.0], [0.0, 1.0], [100.0, 0.0]]),
    ...                                  np.zeros(2), tau=2.0)
    >>> agg, clipped
    (array([1.        , 0.33333333]), [2])
    """
    check_update_matrix(updates)
    n, d = updates.shape
    v = np.zeros(d) if center is None else np.asarray(center, dtype=np.float64)
    if v.shape != (d,) or not np.all(np.isfinite(v)):
        raise RuleParameterError(f"centered clipping needs a finite centre of shape ({d},); "
                                 f"got shape {v.shape}")
    clipped: list[int] = []
    for _ in range(iterations):
        distance = distances_to(updates, v)
        scale = np.minimum(1.0, tau / np.maximum(distance, np.finfo(np.float64).tiny))
        clipped = [int(i) for i in np.flatnonzero(distance > tau)]
        # (1/n) sum_i s_i (d_i - v) = (s @ D) / n - (sum s / n) v
        v = v + weighted_row_sum(updates, scale) / n - (scale.sum() / n) * v
    return v, clipped


def check_size(num_clients: int, num_byzantine: int, **params: object) -> None:
    """Any ``n >= 1``; the declared f does not enter the rule."""
    check_min_clients("centered-clipping", num_clients, num_byzantine, 1, "1")


def rule(updates: np.ndarray, *, num_byzantine: int, weights: Sequence[float] | None,
         tau: float = TAU.default, iterations: int = ITERATIONS.default,
         center: np.ndarray | None = None) -> RuleResult:
    """The registry's adapter: the new centre is this round's aggregate."""
    v, clipped = centered_clipping(updates, center, tau=tau, iterations=iterations)
    return RuleResult(v, clipped=clipped, state={"center": v.copy()})


RULES = (Rule("centered-clipping", rule, check_size, PARAMS,
              description="iterative clipping around the last aggregate (Karimireddy et al. "
                          "2021)", state=("center",)),)
