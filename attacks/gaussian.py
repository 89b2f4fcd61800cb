"""Gaussian Byzantine clients, as in Blanchard et al. (NeurIPS 2017, Sec. 5).

Paper: Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine Learning with Adversaries:
Byzantine Tolerant Gradient Descent".

Each Byzantine client ``j`` sends an independent draw

    v_j ~ N(0, sigma^2 I_d),

zero-mean isotropic noise that ignores the honest updates (only their dimension ``d`` and
dtype are used). We follow the paper's zero-mean form rather than the "mean + noise"
variant some code uses; the paper's experiments use ``sigma = 200``, our default.

The noise comes from the ``rng`` passed in, so a seeded generator makes the attack
reproducible; rows differ between attackers (one draw each).
"""

from __future__ import annotations

import numpy as np

from attacks._common import as_update_matrix, check_count, check_nonnegative, float_dtype
from strategies.params import Param, non_negative_finite

DEFAULT_SIGMA = 200.0
"""Standard deviation of Blanchard et al.'s Gaussian Byzantine workers."""
SIGMA = Param("sigma", DEFAULT_SIGMA, "Gaussian attack: the std of each attacker's N(0, sigma^2 I)",
              non_negative_finite, label="Gaussian attack sigma")
PARAMS = (SIGMA,)


def gaussian_updates(
    num_attackers: int,
    dim: int,
    sigma: float,
    rng: np.random.Generator,
    dtype: np.dtype | type = np.float64,
) -> np.ndarray:
    """Return a ``(num_attackers, dim)`` matrix of i.i.d. ``N(0, sigma^2)`` entries.

    Drawn in float64 from ``rng`` and cast to ``dtype``.

    >>> import numpy as np
    >>> v = gaussian_updates(2, 1000, 3.0, np.random.default_rng(0), np.float32)
    >>> v.shape, v.dtype, bool(abs(v.std() - 3.0) < 0.2)
    ((2, 1000), dtype('float32'), True)
    """
    std = check_nonnegative("sigma", sigma, "the Gaussian attack")
    shape = (check_count("num_attackers", num_attackers, 0), check_count("dim", dim, 1))
    return (std * rng.standard_normal(shape)).astype(dtype, copy=False)


def craft_gaussian(
    honest_updates: np.ndarray,
    num_attackers: int,
    rng: np.random.Generator,
    *,
    sigma: float = DEFAULT_SIGMA,
) -> np.ndarray:
    """Uniform crafting entry: one independent ``N(0, sigma^2 I)`` row per attacker."""
    updates = as_update_matrix(honest_updates)
    return gaussian_updates(num_attackers, updates.shape[1], sigma, rng, float_dtype(updates))
