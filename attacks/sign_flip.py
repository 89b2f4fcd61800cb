"""Sign flipping: each Byzantine client sends the negation of its own honest update.

    v_j = -scale * d_own(j)

where ``d_own(j)`` is the update attacker ``j`` computed honestly on its own data and
``scale >= 0`` (1 in the literature). Used as a baseline attack by, e.g., Li et al.,
"RSA: Byzantine-Robust Stochastic Aggregation Methods for Distributed Learning from
Heterogeneous Datasets", AAAI 2019, and Allen-Zhu et al., "Byzantine-Resilient
Non-Convex Stochastic Gradient Descent", ICLR 2021.

Difference from IPM (:mod:`attacks.ipm`): IPM sends ``-epsilon`` times the *mean* of
the honest updates, the same vector from every attacker; sign flipping negates each
attacker's *own* update, so attackers send different vectors and need no knowledge of
the others.

In the uniform crafting signature, attacker ``j`` (``j = 0..q-1``) flips known row
``j mod k``: with ``k = 1`` (a client that knows only its own update) that is its own
update; with the colluders' ``k = q`` rows, row ``j`` is colluder ``j``'s own update; under
the omniscient hook, which passes only the untouched rows, attacker ``j`` flips honest
update ``j mod k`` (statistically the same as its own when data are IID).
"""

from __future__ import annotations

import numpy as np

from attacks._common import as_update_matrix, check_count, check_nonnegative, float_dtype
from strategies.params import Param, non_negative_finite

SCALE = Param("scale", 1.0, "sign flip: each attacker sends -scale * its own update",
              non_negative_finite, label="sign-flip scale")
PARAMS = (SCALE,)


def sign_flip_update(own_updates: np.ndarray, scale: float = SCALE.default) -> np.ndarray:
    """Return ``-scale * own_updates`` elementwise (one flipped row per own update).

    Args:
        own_updates: an update vector ``(d,)`` or a ``(k, d)`` matrix of them.
        scale: finite and ``>= 0``.

    Returns:
        The same shape, in the input's float dtype (float64 for non-float input).

    >>> import numpy as np
    >>> sign_flip_update(np.array([1.0, -2.0]), scale=2.0)
    array([-2.,  4.])

    """
    factor = check_nonnegative("scale", scale, "sign flipping")
    updates = np.asarray(own_updates)
    dtype = float_dtype(updates)
    return (-factor * updates.astype(dtype, copy=False)).astype(dtype, copy=False)


def craft_sign_flip(
    honest_updates: np.ndarray,
    num_attackers: int,
    rng: np.random.Generator,
    *,
    scale: float = SCALE.default,
) -> np.ndarray:
    """Uniform crafting entry: row ``j`` is ``-scale * honest_updates[j mod k]``.

    ``rng`` is unused (deterministic given the rows).
    """
    updates = as_update_matrix(honest_updates)
    q = check_count("num_attackers", num_attackers, 0)
    return sign_flip_update(updates[np.arange(q) % updates.shape[0]], scale)
