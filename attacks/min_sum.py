"""Min-sum, the AGR-agnostic attack of Shejwalkar and Houmansadr (NDSS 2021).

Paper: "Manipulating the Byzantine: Optimizing Model Poisoning Attacks and Defenses
for Federated Learning", equation (6).

Every attacker sends ``v = mu + gamma * p`` (:mod:`attacks.agnostic`), with ``gamma``
the largest for which the sum of ``v``'s squared distances to the honest updates is
no larger than that of any honest update:

    sum_i ||v - d_i||^2  <=  max_j sum_i ||d_j - d_i||^2

a tighter budget than min-max's (it bounds the whole sum, as Krum's score does).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from attacks.agnostic import agnostic_params, craft_agnostic, sq_distances_to

DIRECTION, GAMMA_INIT = agnostic_params("min-sum")
PARAMS = (DIRECTION, GAMMA_INIT)


def min_sum_constraint(honest: np.ndarray) -> Callable[[np.ndarray], bool]:
    """``v -> sum_i ||v - d_i||^2 <= max_j sum_i ||d_j - d_i||^2``.

    >>> feasible = min_sum_constraint(np.array([[0.0], [2.0], [4.0]]))  # sums 20, 8, 20
    >>> feasible(np.array([2.0])), feasible(np.array([5.0]))
    (True, False)
    """
    budget = max(float(sq_distances_to(honest, row).sum()) for row in honest)
    return lambda candidate: float(sq_distances_to(honest, candidate).sum()) <= budget


def craft_min_sum(honest_updates: np.ndarray, num_attackers: int, rng: np.random.Generator,
                  *, direction: str = DIRECTION.default,
                  gamma_init: float = GAMMA_INIT.default) -> np.ndarray:
    """Uniform crafting entry: identical rows of the min-sum update (``rng`` unused)."""
    return craft_agnostic(honest_updates, num_attackers, min_sum_constraint, direction,
                          gamma_init)
