"""Optimised inner product manipulation, opt-ipm (ByzFL's Opt-IPM, Allouah et al. 2023).

IPM (:mod:`attacks.ipm`, ``v = -epsilon * mu``) with ``epsilon`` chosen every round to
move the defence's aggregate farthest from the honest mean (:mod:`attacks.optimised`):
the attacker is told the aggregator and the pre-aggregation in use.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from attacks._common import repeat_rows
from attacks.ipm import ipm_update
from attacks.optimised import line_search_params, optimised_update

EVALUATIONS, DELTA = line_search_params("opt-ipm", "epsilon")
PARAMS = (EVALUATIONS, DELTA)


def craft_opt_ipm(honest_updates: np.ndarray, num_attackers: int, rng: np.random.Generator,
                  *, evaluations: int = EVALUATIONS.default, delta: float = DELTA.default,
                  defence: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Uniform crafting entry: identical rows of IPM at the most damaging epsilon.

    >>> honest = np.array([[1.0, 1.0], [1.2, 0.8], [0.8, 1.2]])
    >>> v = craft_opt_ipm(honest, 2, np.random.default_rng(0))
    >>> bool(v[0, 0] < -1.0)  # against the plain mean, a large epsilon does the most damage
    True
    """
    update, _ = optimised_update(honest_updates, num_attackers,
                                 lambda h, eps: ipm_update(h, max(eps, 0.0)), defence,
                                 evaluations, delta)
    return repeat_rows(update, num_attackers)
