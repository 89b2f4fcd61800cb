"""Min-max, the AGR-agnostic attack of Shejwalkar and Houmansadr (NDSS 2021).

Paper: "Manipulating the Byzantine: Optimizing Model Poisoning Attacks and Defenses
for Federated Learning", equation (5).

Every attacker sends ``v = mu + gamma * p`` (:mod:`attacks.agnostic`), with ``gamma``
the largest for which ``v`` is no farther from any honest update than the two farthest
honest updates are from each other:

    max_i ||v - d_i||  <=  max_{i, j} ||d_i - d_j||

so a distance-based defence cannot tell ``v`` from the honest updates by its largest
distance, whatever the aggregator (it is not told the defence).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from attacks.agnostic import agnostic_params, craft_agnostic, sq_distances_to

DIRECTION, GAMMA_INIT = agnostic_params("min-max")
PARAMS = (DIRECTION, GAMMA_INIT)


def min_max_constraint(honest: np.ndarray) -> Callable[[np.ndarray], bool]:
    """``v -> max_i ||v - d_i||^2 <= max_{i,j} ||d_i - d_j||^2``.

    >>> feasible = min_max_constraint(np.array([[0.0], [2.0]]))
    >>> feasible(np.array([1.0])), feasible(np.array([3.0]))
    (True, False)
    """
    spread = max(float(sq_distances_to(honest, row).max()) for row in honest)
    return lambda candidate: float(sq_distances_to(honest, candidate).max()) <= spread


def craft_min_max(honest_updates: np.ndarray, num_attackers: int, rng: np.random.Generator,
                  *, direction: str = DIRECTION.default,
                  gamma_init: float = GAMMA_INIT.default) -> np.ndarray:
    """Uniform crafting entry: identical rows of the min-max update (``rng`` unused)."""
    return craft_agnostic(honest_updates, num_attackers, min_max_constraint, direction,
                          gamma_init)
