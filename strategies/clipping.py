"""Static norm clipping, a pre-aggregation.

Every update longer than ``max-norm`` is scaled down to that norm:

    y_i = d_i * min(1, C / ||d_i||)

(as ByzFL's ``Clipping``). Row ``i`` stands for client ``i``; ``clipped`` lists the
rows that were scaled.
"""

from __future__ import annotations

import numpy as np

from strategies.chunked import row_norms
from strategies.contract import Preaggregation, PreaggregationResult
from strategies.params import Param, positive_finite

MAX_NORM = Param("max-norm", 2.0, "static clipping: updates longer than this are scaled to it",
                 positive_finite, label="clipping norm C")
PARAMS = (MAX_NORM,)


def clip_rows(updates: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Scale each row whose norm exceeds its threshold down to it; return rows and clipped.

    >>> clip_rows(np.array([[3.0, 4.0], [0.3, 0.4]]), np.array([1.0, 1.0]))
    (array([[0.6, 0.8],
           [0.3, 0.4]]), [0])
    """
    norms = row_norms(updates)
    clipped = np.flatnonzero(norms > thresholds)
    out = updates.copy()
    for i in clipped:
        out[i] = (updates[i].astype(np.float64) * (thresholds[i] / norms[i])).astype(out.dtype)
    return out, [int(i) for i in clipped]


def check_size(num_clients: int, num_byzantine: int, max_norm: float = MAX_NORM.default) -> None:
    """Any ``n``."""


def preaggregate(updates: np.ndarray, *, num_byzantine: int, rng: np.random.Generator,
                 max_norm: float = MAX_NORM.default) -> PreaggregationResult:
    """The registry's adapter."""
    out, clipped = clip_rows(updates, np.full(updates.shape[0], max_norm))
    return PreaggregationResult(out, [[i] for i in range(len(updates))], clipped)


PREAGGREGATION = Preaggregation("clipping", preaggregate, check_size,
                                lambda n, f, **p: n, PARAMS, "static norm clipping")
