"""The omniscient adversary's math: corrupt ``q`` of a round's updates, knowing all the rest.

The threat model of Xie et al. (UAI 2019) and of this project's IPM experiments: in each
round, ``q`` of the ``n`` sampled clients are corrupted, drawn uniformly at random
without replacement; the adversary sees the round's ``n - q`` honest updates exactly and
replaces the corrupted clients' updates by the crafted ones. For IPM every corrupted row
becomes

    v = -epsilon * mu_H,    mu_H = (1 / (n - q)) * sum_{i not corrupted} d_i.

Only a simulation can know ``mu_H``, so this runs server-side, in a hook enabled
explicitly by the run config. Pure numpy; the Flower hook wraps it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attacks._common import as_update_matrix, check_byzantine_count, float_dtype
from attacks.errors import AttackKindError, AttackParameterError
from attacks.registry import craft_byzantine_updates


def choose_corrupted(num_sampled: int, num_attackers: int, rng: np.random.Generator) -> np.ndarray:
    """Return the sorted indices of ``num_attackers`` of the round's ``num_sampled`` clients.

    Drawn uniformly without replacement from ``rng``; indices into the round's list of
    sampled clients (an int64 array).

    Raises:
        AttackParameterError: ``num_sampled < 1``, ``num_attackers < 0``, or
            ``num_attackers > num_sampled``.

    >>> import numpy as np
    >>> idx = choose_corrupted(5, 2, np.random.default_rng(0))
    >>> idx.size, bool(np.all(np.diff(idx) > 0)), bool(np.all((0 <= idx) & (idx < 5)))
    (2, True, True)

    """
    n, q = check_byzantine_count(
        num_sampled,
        num_attackers,
        names=("num_sampled", "num_attackers"),
        hint="Sample more clients per round or lower the number of attackers.",
    )
    return np.sort(rng.choice(n, size=q, replace=False)).astype(np.int64)


def _checked_indices(corrupted_indices: np.ndarray, n: int) -> np.ndarray:
    """The corrupted rows, sorted, if they are distinct integers in ``[0, n)`` leaving one."""
    indices = np.asarray(corrupted_indices)
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise AttackParameterError(
            f"corrupted_indices must be integers; got dtype {indices.dtype}."
        )
    indices = np.sort(indices.astype(np.int64).ravel())
    if indices.size and (indices[0] < 0 or indices[-1] >= n):
        raise AttackParameterError(
            f"corrupted_indices must lie in [0, n) = [0, {n}); got {indices.tolist()}."
        )
    if np.unique(indices).size != indices.size:
        raise AttackParameterError(f"corrupted_indices must be distinct; got {indices.tolist()}.")
    if indices.size >= n:
        raise AttackParameterError(
            f"the omniscient adversary needs at least one honest update; got n={n} updates "
            f"and q={indices.size} corrupted. Corrupt fewer clients than are sampled."
        )
    return indices


def corrupt_updates(
    updates: np.ndarray,
    corrupted_indices: np.ndarray,
    attack_name: str,
    rng: np.random.Generator,
    **params: Any,
) -> np.ndarray:
    """Return a copy of ``updates`` whose corrupted rows hold the crafted updates.

    The rows not in ``corrupted_indices`` are the honest updates of the round: they are
    passed to :func:`attacks.registry.craft_byzantine_updates` (so IPM uses their exact
    mean) and copied unchanged. Deterministic attacks give identical corrupted rows;
    corrupted row ``j`` (in sorted index order) gets crafted row ``j``. With no index
    given, the attack is not called (a ``"crash"`` does not fire) and the copy is returned.
    The copy has the input's float dtype (float64 for non-float input).

    Args:
        updates: ``(n, d)`` matrix of the round's updates, one row per sampled client.
        corrupted_indices: distinct row indices in ``[0, n)``, at least one row left honest.
        attack_name: a registered attack of a crafting kind, e.g. ``"ipm"``.
        rng: generator for randomized attacks.
        **params: the attack's parameters, e.g. ``epsilon=0.1``.

    Raises:
        AttackParameterError: bad indices or no honest row left.
        AttackKindError: the attack does not craft ``(q, d)`` rows (e.g. ``"wrong-shape"``).

    >>> import numpy as np
    >>> u = np.array([[1.0, 2.0], [9.0, 9.0], [3.0, 6.0]])
    >>> corrupt_updates(u, np.array([1]), "ipm", np.random.default_rng(0), epsilon=0.5)
    array([[ 1.,  2.],
           [-1., -2.],
           [ 3.,  6.]])

    """
    all_updates = as_update_matrix(updates)
    n = all_updates.shape[0]
    indices = _checked_indices(corrupted_indices, n)
    honest = np.ones(n, dtype=bool)
    honest[indices] = False
    crafted = craft_byzantine_updates(attack_name, all_updates[honest], indices.size, rng, **params)
    expected = (indices.size, all_updates.shape[1])
    if crafted.shape != expected:
        raise AttackKindError(
            f"attack {attack_name!r} crafted rows of shape {crafted.shape}; the omniscient "
            f"hook replaces rows of an (n, d) matrix and needs (q, d) = {expected}."
        )
    corrupted = all_updates.astype(float_dtype(all_updates), copy=True)
    corrupted[indices] = crafted
    return corrupted


class OmniscientAdversary:
    """The server-side hook of the omniscient threat model (simulations only).

    Called by :class:`strategies.fedavg.UpdateSpaceFedAvg` with each round's
    accepted updates; from ``start_round`` on it corrupts ``num_attackers`` of
    them at random (seeded by the run's seed and the round) with ``attack``
    crafted from the exact mean of the others, and says which rows it rewrote.

    A round whose failures left ``n <= num_attackers`` accepted updates (e.g. a model
    already destroyed by the attack, on which honest training diverges) is corrupted
    in ``n - 1`` rows: the attacks craft from the honest rows, so one must stay, and
    the run goes on instead of stopping on a count the adversary cannot reach.
    """

    def __init__(self, attack: str, num_attackers: int, start_round: int, seed: int,
                 attack_params: dict[str, Any] | None = None) -> None:
        self.attack = attack
        self.num_attackers = num_attackers
        self.start_round = start_round
        self.seed = seed
        self.attack_params = dict(attack_params or {})

    def __call__(self, server_round: int, updates: np.ndarray,
                 client_metrics: list[dict[str, Any]]) -> tuple[np.ndarray, list[int]]:
        """Return the round's updates with the corrupted rows replaced, and those rows."""
        if server_round < self.start_round or self.num_attackers == 0:
            return updates, []
        num_attackers = min(self.num_attackers, len(updates) - 1)
        if num_attackers < 1:
            return updates, []
        rng = np.random.default_rng([self.seed, server_round])
        corrupted = choose_corrupted(len(updates), num_attackers, rng)
        return (corrupt_updates(updates, corrupted, self.attack, rng, **self.attack_params),
                [int(i) for i in corrupted])
