"""Fang et al.'s attack on Krum (USENIX Security 2020).

Paper: Fang, Cao, Jia, Gong, "Local Model Poisoning Attacks to Byzantine-Robust
Federated Learning", Section 3.2, "Attacking Krum" (full knowledge; partial knowledge
when only the attackers' own honest updates are known).

Every attacker sends ``v = -lambda * s``, ``s`` the sign of the honest mean (the
direction the model would move), with ``lambda`` the largest that Krum still selects:
from the paper's upper bound (``m`` updates, ``c`` attackers, ``d`` coordinates)

    lambda_0 = 1 / ((m - 2c - 1) sqrt(d)) * min_i sum_{l in G_i} ||d_l - d_i||
               + 1 / sqrt(d) * max_i ||d_i||

(``G_i``: the ``m - c - 2`` honest updates nearest honest ``d_i``), ``lambda`` is halved
until Krum, run on the known honest updates plus the ``c`` crafted copies with the f
the defence declares (Kerckhoffs: the attacker knows the defence), selects a copy, or
``lambda`` falls below ``1e-5``. The ``c - 1`` other attackers send exact copies (the
paper: vectors close to it), which only helps the selection. Krum needs ``m >= 2f + 3``:
when the known updates are too few for the declared f (partial knowledge), the
simulation uses the largest f they allow. In update space, as :mod:`attacks.fang_trimmed_mean`.
"""

from __future__ import annotations

import numpy as np

from attacks._common import as_update_matrix, float_dtype, repeat_rows, row_mean
from strategies.krum import krum_select, pairwise_sq_distances

LAMBDA_THRESHOLD = 1e-5


def lambda_upper_bound(honest: np.ndarray, num_attackers: int) -> float:
    """The paper's ``lambda_0`` for the honest updates and ``c`` attackers."""
    k, d = honest.shape
    m, c = k + num_attackers, num_attackers
    distances = np.sqrt(pairwise_sq_distances(honest))
    neighbours = max(min(m - c - 2, k - 1), 1)
    nearest = np.sort(distances, axis=1)[:, 1:neighbours + 1].sum(axis=1) if k > 1 else [0.0]
    spread = float(np.min(nearest)) / (max(m - 2 * c - 1, 1) * np.sqrt(d))
    return spread + float(np.linalg.norm(honest, axis=1).max()) / np.sqrt(d)


def fang_krum_update(honest_updates: np.ndarray, num_attackers: int,
                     declared_f: int) -> tuple[np.ndarray, float]:
    """The crafted update and its ``lambda`` (see the module docstring).

    >>> honest = np.array([[1.0, 1.0], [1.1, 0.9], [0.9, 1.1], [1.0, 1.2], [1.2, 1.0]])
    >>> v, lam = fang_krum_update(honest, 2, 2)
    >>> bool(np.all(v < 0))  # against the honest direction
    True
    """
    honest = as_update_matrix(honest_updates).astype(np.float64)
    s = np.sign(row_mean(honest))
    m = honest.shape[0] + num_attackers
    f = max(min(declared_f, (m - 3) // 2), 0)
    lam = lambda_upper_bound(honest, num_attackers)
    while lam >= LAMBDA_THRESHOLD and m >= 2 * f + 3:  # Krum cannot run on fewer
        crafted = -lam * s
        vectors = np.vstack([honest, repeat_rows(crafted, num_attackers)])
        if int(krum_select(vectors, f)[0]) >= honest.shape[0]:
            break
        lam /= 2
    return -lam * s, lam


def craft_fang_krum(honest_updates: np.ndarray, num_attackers: int, rng: np.random.Generator,
                    *, declared_f: int = 0) -> np.ndarray:
    """Uniform crafting entry: identical rows (``rng`` unused; ``declared_f`` is context)."""
    update, _ = fang_krum_update(honest_updates, num_attackers, declared_f)
    return repeat_rows(update.astype(float_dtype(np.asarray(honest_updates))), num_attackers)
