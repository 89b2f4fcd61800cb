"""Inner product manipulation (IPM), the attack of Xie, Koyejo and Gupta (UAI 2019).

Paper: "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner Product Manipulation".

Every Byzantine client of the round sends the same update

    v = -epsilon * mu,    mu = (1/k) * sum_{i=1..k} d_i,

where ``d_1..d_k`` are the honest updates the adversary knows (``k = 1`` when a client
only knows its own) and ``epsilon >= 0`` is the attack strength.

Why it works, with ``q`` attackers among ``n`` clients and equal weights:

- FedAvg returns ``((n - q) * mu - q * epsilon * mu) / n``, whose inner product with the
  true mean ``mu`` is ``(n - q - q * epsilon) * ||mu||^2 / n``: negative, i.e. a step
  uphill, once ``epsilon > (n - q) / q``.
- A small ``epsilon`` (0.1 in the paper) puts ``v`` close to the origin, hence close to
  every honest update when they are spread around ``mu``; the ``q`` identical copies are
  at distance 0 of one another, so Krum scores them lowest and selects ``v``, whose inner
  product with ``mu`` is ``-epsilon * ||mu||^2 <= 0``.

The run's default strength is 1 (FedAvg's step still shrinks with enough attackers);
0.1 is the paper's value against Krum (the preset ``seed-krum-ipm-small`` uses it).
"""

from __future__ import annotations

import numpy as np

from attacks._common import (
    as_update_matrix,
    check_nonnegative,
    float_dtype,
    repeat_rows,
    row_mean,
)
from strategies.params import Param, non_negative_finite

EPSILON = Param("epsilon", 1.0, "IPM's epsilon: each attacker sends -epsilon * the honest mean",
                non_negative_finite, label="IPM epsilon")
PARAMS = (EPSILON,)


def ipm_update(honest_updates: np.ndarray, epsilon: float) -> np.ndarray:
    """Return the IPM update ``v = -epsilon * mean(honest_updates, axis=0)``.

    Args:
        honest_updates: ``(k, d)`` matrix of the honest updates the adversary knows,
            ``k >= 1`` (a single update as one row).
        epsilon: attack strength, finite and ``>= 0``.

    Returns:
        The vector ``v`` of length ``d``. The mean is accumulated in float64; ``v`` is
        cast back to the input's float dtype (float64 for non-float input).

    Raises:
        AttackParameterError: ``epsilon`` negative or not finite, or the input not
            a ``(k, d)`` matrix with ``k >= 1``.

    >>> import numpy as np
    >>> ipm_update(np.array([[1.0, 2.0], [3.0, 6.0]]), epsilon=0.5)
    array([-1., -2.])

    """
    eps = check_nonnegative("epsilon", epsilon, "IPM")
    updates = as_update_matrix(honest_updates)
    return (-eps * row_mean(updates)).astype(float_dtype(updates))


def craft_ipm(
    honest_updates: np.ndarray,
    num_attackers: int,
    rng: np.random.Generator,
    *,
    epsilon: float = EPSILON.default,
) -> np.ndarray:
    """Uniform crafting entry: ``num_attackers`` identical rows of :func:`ipm_update`.

    ``rng`` is unused (IPM is deterministic); it is accepted for the uniform signature.
    """
    return repeat_rows(ipm_update(honest_updates, epsilon), num_attackers)
