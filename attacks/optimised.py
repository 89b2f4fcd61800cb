"""What opt-ipm and opt-alie share: the defence they are told, and how damage is measured.

Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, "Fixing by Mixing" (AISTATS
2023), whose ByzFL code optimises the factor of IPM and ALIE each round. The attacker
knows the defence (Kerckhoffs's principle): the framework passes it as ``defence``, a
function from the round's ``(n, d)`` updates to the aggregate (the run's pre-aggregation
and rule; :func:`fl_app.federation.roles.defence_of`). The damage of a factor ``t`` is

    || defence(honest updates + q copies of v(t)) - mean(honest updates) ||

and the factor is the one :func:`attacks.search.line_search_max` finds. Without a
defence (pure-math use) the plain mean is assumed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from attacks._common import as_update_matrix, float_dtype, repeat_rows, row_mean
from attacks.search import line_search_max
from strategies.params import Param, at_least, positive_finite

Defence = Callable[[np.ndarray], np.ndarray]


def line_search_params(attack: str, factor: str) -> tuple[Param, Param]:
    """The two parameters opt-ipm and opt-alie both declare: evaluations and the first step."""
    return (Param("evaluations", 20, f"defence evaluations of the line search on {factor}",
                  at_least(1), label=f"{attack} evaluations"),
            Param("delta", 10.0, f"the line search's first step on {factor}", positive_finite,
                  label=f"{attack} step"))


def plain_mean(updates: np.ndarray) -> np.ndarray:
    """The defence assumed when none is given."""
    return np.mean(updates, axis=0, dtype=np.float64)


def optimised_update(honest_updates: np.ndarray, num_attackers: int,
                     craft: Callable[[np.ndarray, float], np.ndarray], defence: Defence | None,
                     evaluations: int, delta: float) -> tuple[np.ndarray, float]:
    """The crafted update ``craft(honest, t)`` for the most damaging ``t``, and ``t``."""
    honest = as_update_matrix(honest_updates)
    aggregate = defence or plain_mean
    target = row_mean(honest)

    def damage(factor: float) -> float:
        crafted = craft(honest, factor).astype(honest.dtype, copy=False)
        vectors = np.vstack([honest, repeat_rows(crafted, num_attackers)])
        return float(np.linalg.norm(aggregate(vectors) - target))

    factor = line_search_max(damage, 0.0, delta, evaluations)
    return craft(honest, factor).astype(float_dtype(honest)), factor
