"""Mimic (Karimireddy, He, Jaggi, ICLR 2022).

Paper: "Byzantine-Robust Learning on Heterogeneous Datasets via Bucketing", Section 5.

Every attacker sends a copy of one honest update:

    v = d_target

Under heterogeneous data this over-represents one client's distribution, which robust
rules cannot undo (the copies are perfectly honest-looking), and it needs no knowledge
of the defence. ``target`` indexes the honest updates the adversary knows: the colluders'
own honest updates, or the round's honest updates under the omniscient hook (sorted by
partition id, so a run is reproducible).
"""

from __future__ import annotations

import numpy as np

from attacks._common import as_update_matrix, repeat_rows
from attacks.errors import AttackParameterError
from strategies.params import Param, at_least

TARGET = Param("target", 0, "which known honest update every attacker copies", at_least(0),
               label="mimicked update")
PARAMS = (TARGET,)


def craft_mimic(honest_updates: np.ndarray, num_attackers: int, rng: np.random.Generator,
                *, target: int = TARGET.default) -> np.ndarray:
    """Uniform crafting entry: ``num_attackers`` copies of honest row ``target``.

    >>> craft_mimic(np.array([[1.0, 2.0], [3.0, 4.0]]), 2, np.random.default_rng(0), target=1)
    array([[3., 4.],
           [3., 4.]])
    """
    updates = as_update_matrix(honest_updates)
    if not 0 <= target < updates.shape[0]:
        raise AttackParameterError(f"mimic's target must index the {updates.shape[0]} known "
                                   f"honest updates; got target={target}")
    return repeat_rows(updates[target], num_attackers)
