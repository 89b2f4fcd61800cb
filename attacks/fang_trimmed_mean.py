"""Fang et al.'s attack on the trimmed mean and the median (USENIX Security 2020).

Paper: Fang, Cao, Jia, Gong, "Local Model Poisoning Attacks to Byzantine-Robust
Federated Learning", Section 3.2 (full knowledge; partial knowledge when only the
attackers' own honest updates are known, as with ``attack-knowledge='colluders'``).

With ``s_j`` the sign of the honest mean's coordinate ``j`` (the direction the model
would move) and ``max_j``, ``min_j`` the largest and smallest known honest values, each
attacker draws every coordinate uniformly from an interval beyond the honest range, on
the side opposite to ``s_j``:

    s_j < 0:  [max_j, b * max_j] if max_j > 0, else [max_j, max_j / b]
    s_j >= 0: [min_j / b, min_j] if min_j > 0, else [b * min_j, min_j]

(``b = 2`` in the paper). We apply it to updates ``d_i = w_i - w``, the vectors our
rules aggregate, where the paper writes it for the models ``w_i``; the intervals are
the same with the origin at the current global model.
"""

from __future__ import annotations

import numpy as np

from attacks._common import as_update_matrix, float_dtype, row_mean
from strategies.params import Param

B = Param("b", 2.0, "how far beyond the honest range the crafted values go (b > 1)",
          lambda v: None if v > 1.0 else "a number > 1", label="Fang b")
PARAMS = (B,)


def fang_trimmed_mean_bounds(honest_updates: np.ndarray, b: float = B.default
                             ) -> tuple[np.ndarray, np.ndarray]:
    """The per-coordinate interval ``[low, high]`` the attackers draw from.

    >>> low, high = fang_trimmed_mean_bounds(np.array([[1.0, -1.0], [3.0, -2.0]]))
    >>> low, high  # coordinate 0 moves up: go below min 1; 1 moves down: go above max -1
    (array([ 0.5, -1. ]), array([ 1. , -0.5]))
    """
    honest = as_update_matrix(honest_updates).astype(np.float64)
    s = np.sign(row_mean(honest))
    top, bottom = honest.max(axis=0), honest.min(axis=0)
    above = np.where(top > 0, [top, b * top], [top, top / b])  # s < 0: push up
    below = np.where(bottom > 0, [bottom / b, bottom], [b * bottom, bottom])  # s >= 0
    low = np.where(s < 0, above[0], below[0])
    high = np.where(s < 0, above[1], below[1])
    return low, high


def craft_fang_trimmed_mean(honest_updates: np.ndarray, num_attackers: int,
                            rng: np.random.Generator, *, b: float = B.default) -> np.ndarray:
    """Uniform crafting entry: one independent draw per attacker from the intervals."""
    low, high = fang_trimmed_mean_bounds(honest_updates, b)
    draws = rng.uniform(size=(num_attackers, low.size))
    return (low + draws * (high - low)).astype(float_dtype(np.asarray(honest_updates)))
