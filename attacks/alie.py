"""A Little Is Enough (ALIE), the attack of Baruch, Baruch and Goldberg (NeurIPS 2019).

Paper: "A Little Is Enough: Circumventing Defenses For Distributed Learning".

All Byzantine clients send the same update, coordinate ``j`` of which is

    v_j = mu_j + z_max * sigma_j,

with ``mu_j`` and ``sigma_j`` the mean and standard deviation of coordinate ``j`` over the
``k`` honest updates the adversary knows, and ``z_max`` chosen from ``n`` (clients in the
round) and ``q`` (Byzantine among them) so that the attack still wins a majority:

    s = floor(n / 2 + 1) - q          (honest "supporters" the attackers need)
    z_max = Phi^{-1}((n - s) / n)     (Phi: standard normal CDF)

i.e. the largest ``z`` with ``Phi(z) < (n - s) / n``: about ``s`` honest updates lie
farther from the mean than ``v`` in each coordinate, so a median- or distance-based
defense still counts ``v`` as central. Example: ``n = 50, q = 12`` gives ``s = 14`` and
``z_max = Phi^{-1}(0.72) ~ 0.5828``.

Conventions where implementations differ:

- Sign: Algorithm 1 of the paper writes ``mu_j + z_max * sigma_j``, which we follow;
  several reimplementations (e.g. Karimireddy et al.'s) send ``mu_j - z_max * sigma_j``.
  Both stay within the honest spread; pass ``z_max=-alie_z_max(n, q)`` for the minus one.
- Quantile: the paper's ``(n - s) / n``; some code uses ``(n - q - s) / (n - q)``.
- ``sigma`` is the population standard deviation (``ddof = 0``): it describes the ``k``
  known updates exactly (they are the whole population in the omniscient setting) and
  is defined for ``k = 1`` (then ``sigma = 0`` and ``v`` is the known update itself: ALIE
  needs ``k >= 2`` known updates to do anything).
"""

from __future__ import annotations

import math
from numbers import Real
from statistics import NormalDist

import numpy as np

from attacks._common import (
    as_update_matrix,
    check_byzantine_count,
    float_dtype,
    repeat_rows,
    row_mean,
)
from attacks.errors import AttackParameterError


def alie_z_max(num_clients: int, num_attackers: int) -> float:
    """Return ``z_max = Phi^{-1}((n - s) / n)`` with ``s = floor(n / 2 + 1) - q``.

    Args:
        num_clients: ``n``, the clients taking part in the round (Byzantine included).
        num_attackers: ``q``, the Byzantine clients among them.

    Raises:
        AttackParameterError: ``n < 1``, ``q`` outside ``[0, n]``, or ``(n - s) / n``
            outside ``(0, 1)`` (``q`` a majority, or ``n <= 2`` with ``q = 0``).

    >>> round(alie_z_max(50, 12), 4)
    0.5828

    """
    n, q = check_byzantine_count(num_clients, num_attackers)
    s = n // 2 + 1 - q
    quantile = (n - s) / n
    if not 0.0 < quantile < 1.0:
        hint = (
            "The attackers are a majority and need no honest supporters; pick fewer "
            "attackers or more clients."
            if s <= 0
            else "Too few clients for ALIE; it needs n >= 3."
        )
        raise AttackParameterError(
            "ALIE needs 0 < (n - s) / n < 1 with s = floor(n / 2 + 1) - q; got "
            f"n={n}, q={q}, s={s}, (n - s) / n={quantile}. {hint}"
        )
    return NormalDist().inv_cdf(quantile)


def alie_update(
    honest_updates: np.ndarray,
    num_clients: int,
    num_attackers: int,
    z_max: float | None = None,
) -> np.ndarray:
    """Return the ALIE update ``v = mu + z_max * sigma`` (coordinate-wise).

    Args:
        honest_updates: ``(k, d)`` matrix of the honest updates the adversary knows.
        num_clients: ``n``, the clients of the round.
        num_attackers: ``q``, the Byzantine clients among them.
        z_max: overrides :func:`alie_z_max` (any finite real; negative flips the sign).

    Returns:
        ``v`` of length ``d``; ``mu`` and ``sigma`` (``ddof = 0``) are computed in float64
        and ``v`` is cast to the input's float dtype (float64 for non-float input).

    >>> import numpy as np
    >>> alie_update(np.array([[0.0, 0.0], [2.0, 4.0]]), 50, 12, z_max=0.5)
    array([1.5, 3. ])

    """
    updates = as_update_matrix(honest_updates)
    if z_max is None:
        z = alie_z_max(num_clients, num_attackers)
    else:
        check_byzantine_count(num_clients, num_attackers)
        if isinstance(z_max, bool) or not isinstance(z_max, Real) or not math.isfinite(z_max):
            raise AttackParameterError(f"ALIE needs a finite real z_max; got z_max={z_max!r}.")
        z = float(z_max)
    sigma = np.std(updates, axis=0, dtype=np.float64, ddof=0)
    return (row_mean(updates) + z * sigma).astype(float_dtype(updates))


def craft_alie(
    honest_updates: np.ndarray,
    num_attackers: int,
    rng: np.random.Generator,
    *,
    num_clients: int | None = None,
    z_max: float | None = None,
) -> np.ndarray:
    """Uniform crafting entry: ``num_attackers`` identical rows of :func:`alie_update`.

    ``num_clients`` defaults to ``k + num_attackers`` (the honest rows known plus the
    attackers), which is exact when the adversary knows every honest update (the
    omniscient hook). A client that knows fewer passes the round's ``n``. ``rng`` is
    unused (ALIE is deterministic).
    """
    updates = as_update_matrix(honest_updates)
    n = updates.shape[0] + num_attackers if num_clients is None else num_clients
    return repeat_rows(alie_update(updates, n, num_attackers, z_max), num_attackers)
