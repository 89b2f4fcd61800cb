"""Optimised ALIE, opt-alie (ByzFL's Opt-ALIE, Allouah et al. 2023).

ALIE (:mod:`attacks.alie`, ``v = mu + z * sigma``) with ``z`` chosen every round to move
the defence's aggregate farthest from the honest mean (:mod:`attacks.optimised`), in
place of Baruch et al.'s ``z_max``: the attacker is told the aggregator in use.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from attacks._common import repeat_rows
from attacks.alie import alie_update
from attacks.optimised import line_search_params, optimised_update

EVALUATIONS, DELTA = line_search_params("opt-alie", "z")
PARAMS = (EVALUATIONS, DELTA)


def craft_opt_alie(honest_updates: np.ndarray, num_attackers: int, rng: np.random.Generator,
                   *, evaluations: int = EVALUATIONS.default, delta: float = DELTA.default,
                   defence: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Uniform crafting entry: identical rows of ALIE at the most damaging z.

    >>> honest = np.array([[1.0, 1.0], [1.2, 0.8], [0.8, 1.2]])
    >>> v = craft_opt_alie(honest, 1, np.random.default_rng(0))
    >>> v.shape
    (1, 2)
    """
    n = honest_updates.shape[0] + num_attackers
    update, _ = optimised_update(
        honest_updates, num_attackers,
        lambda h, z: alie_update(h, n, num_attackers, z_max=z), defence, evaluations, delta)
    return repeat_rows(update, num_attackers)
