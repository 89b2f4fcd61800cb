"""What min-max and min-sum share: the perturbation directions and the crafted update.

Shejwalkar and Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning
Attacks and Defenses for Federated Learning", NDSS 2021, Section IV-B (AGR-agnostic).

The malicious update is ``v = mu + gamma * p``: ``mu`` the mean of the known honest
updates, ``p`` a perturbation direction (``unit``: ``-mu / ||mu||``; ``std``: ``-sigma``,
the coordinate-wise standard deviation; ``sign``: ``-sign(mu)``) and ``gamma`` the
largest value, found by bisection (:func:`attacks.search.largest_feasible`), for which
the attack's distance constraint holds (:mod:`attacks.min_max`, :mod:`attacks.min_sum`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from attacks._common import as_update_matrix, float_dtype, repeat_rows, row_mean
from attacks.errors import AttackParameterError
from attacks.search import largest_feasible
from strategies.params import Param, one_of, positive_finite

DIRECTIONS = ("unit", "std", "sign")


def agnostic_params(attack: str) -> tuple[Param, Param]:
    """The two parameters min-max and min-sum both declare: the direction and the first gamma."""
    return (Param("direction", "unit", "perturbation p: unit (-mu / norm(mu)), std (-sigma) "
                  "or sign (-sign(mu))", one_of(DIRECTIONS), label=f"{attack} direction"),
            Param("gamma-init", 10.0, "the bisection's first gamma (it searches [0, 2x))",
                  positive_finite, label=f"{attack} initial gamma"))
# honest updates (float64) -> (candidate v -> does v satisfy the attack's constraint?),
# so that the honest updates' own spread is computed once per round, not per candidate
Constraint = Callable[[np.ndarray], Callable[[np.ndarray], bool]]


def perturbation(honest: np.ndarray, direction: str) -> np.ndarray:
    """The perturbation ``p`` (float64) of the honest updates for ``direction``.

    >>> perturbation(np.array([[3.0, 0.0], [3.0, 8.0]]), "unit")
    array([-0.6, -0.8])
    >>> perturbation(np.array([[3.0, 0.0], [3.0, 8.0]]), "std")
    array([-0., -4.])
    """
    mu = row_mean(honest)
    if direction == "unit":
        norm = np.linalg.norm(mu)
        return -mu / norm if norm > 0 else np.zeros_like(mu)
    if direction == "std":
        return -np.std(honest, axis=0, dtype=np.float64)
    if direction == "sign":
        return -np.sign(mu)
    raise AttackParameterError(f"the perturbation direction is one of {list(DIRECTIONS)}; "
                               f"got {direction!r}")


def sq_distances_to(honest: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Squared L2 distance from every honest update to ``point`` (float64)."""
    diff = honest - point
    return np.einsum("ij,ij->i", diff, diff)


def agnostic_update(honest_updates: np.ndarray, constraint: Constraint, direction: str,
                    gamma_init: float) -> tuple[np.ndarray, float]:
    """The update ``mu + gamma * p`` with the largest feasible ``gamma``, and that gamma."""
    honest = as_update_matrix(honest_updates).astype(np.float64)
    mu, p = row_mean(honest), perturbation(honest, direction)
    feasible = constraint(honest)
    gamma = largest_feasible(lambda g: feasible(mu + g * p), gamma_init)
    return (mu + gamma * p).astype(float_dtype(np.asarray(honest_updates))), gamma


def craft_agnostic(honest_updates: np.ndarray, num_attackers: int, constraint: Constraint,
                   direction: str, gamma_init: float) -> np.ndarray:
    """``num_attackers`` identical rows of :func:`agnostic_update`."""
    update, _ = agnostic_update(honest_updates, constraint, direction, gamma_init)
    return repeat_rows(update, num_attackers)
