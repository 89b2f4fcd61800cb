"""Coordinate-wise trimmed mean (Yin, Chen, Kannan, Bartlett, ICML 2018).

Paper: "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates".

For every coordinate ``j``, sort ``d_1j .. d_nj``, drop the ``b`` largest and the ``b``
smallest and average the remaining ``n - 2b``:

    trmean_b(d_1..d_n)_j = (1 / (n - 2b)) * sum_{k = b+1}^{n-b} d_(k)j

``b`` is the declared f unless a count (``trim``) or a fraction (``fraction``:
``b = floor(fraction * n)``, as Flower's ``FedTrimmedAvg`` and ``scipy.stats.trim_mean``)
is given; the rule needs ``n >= 2b + 1``. With ``b = 0`` it is the plain mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from strategies.contract import Rule, RuleResult
from strategies.coordinatewise import reduce_sorted_columns, sorted_mean
from strategies.errors import RuleParameterError
from strategies.params import Param, at_least
from strategies.preconditions import check_min_clients, check_update_matrix

TRIM = Param("trim", -1, "values dropped at each end per coordinate; -1: the declared f",
             at_least(-1), label="trimmed-mean b")
FRACTION = Param("fraction", 0.0, "if > 0: drop floor(fraction * n) at each end instead",
                 lambda v: None if 0.0 <= v < 0.5 else "a number in [0, 0.5)",
                 label="trimmed fraction")
PARAMS = (TRIM, FRACTION)


def trimmed_mean(updates: np.ndarray, num_trimmed: int) -> np.ndarray:
    """Return the coordinate-wise mean without the ``b`` lowest and highest values (float64).

    >>> trimmed_mean(np.array([[0.0, 10.0], [1.0, 2.0], [2.0, 3.0], [-50.0, 4.0]]), 1)
    array([0.5, 3.5])
    """
    check_update_matrix(updates)
    n = updates.shape[0]
    if not (num_trimmed >= 0 and 2 * num_trimmed < n):
        raise RuleParameterError(f"trimmed mean needs 0 <= b < n / 2; got b={num_trimmed}, n={n}")
    return reduce_sorted_columns(updates, lambda s: sorted_mean(s, num_trimmed, n - num_trimmed))


def num_trimmed(num_clients: int, num_byzantine: int, trim: int, fraction: float) -> int:
    """The ``b`` of a round: ``trim``, ``floor(fraction * n)`` or the declared f.

    >>> num_trimmed(10, 2, -1, 0.0), num_trimmed(10, 2, 3, 0.0), num_trimmed(10, 2, -1, 0.25)
    (2, 3, 2)
    """
    if trim >= 0 and fraction > 0:
        raise RuleParameterError(
            f"give the trimmed mean a count (trim={trim}) or a fraction (fraction={fraction}), "
            "not both; set trim=-1 to use the fraction.")
    if fraction > 0:
        return math.floor(fraction * num_clients)
    return num_byzantine if trim < 0 else trim


def check_size(num_clients: int, num_byzantine: int, trim: int = TRIM.default,
               fraction: float = FRACTION.default) -> None:
    """``n >= 2b + 1``: something must be left to average."""
    b = num_trimmed(num_clients, num_byzantine, trim, fraction)
    check_min_clients("trimmed-mean", num_clients, num_byzantine, 2 * b + 1,
                      f"2b + 1 = {2 * b + 1} (b = {b} trimmed at each end)")


def rule(updates: np.ndarray, *, num_byzantine: int, weights: Sequence[float] | None,
         trim: int = TRIM.default, fraction: float = FRACTION.default) -> RuleResult:
    """The registry's adapter; ``iterations`` is unused, every row may contribute."""
    return RuleResult(trimmed_mean(updates, num_trimmed(len(updates), num_byzantine, trim,
                                                        fraction)))


RULES = (Rule("trimmed-mean", rule, check_size, PARAMS,
              description="coordinate-wise trimmed mean (Yin et al. 2018)"),)
