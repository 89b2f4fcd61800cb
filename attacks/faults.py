"""Fault-injection "attacks" for reliability testing, not from a paper.

They exist to test that the server rejects malformed updates and survives failing
clients instead of aggregating garbage or crashing:

- ``"nan"``: every Byzantine client sends an update full of NaN.
- ``"crash"``: the client raises :class:`~attacks.errors.InjectedFault` instead of
  returning an update.
- ``"wrong-shape"``: the client sends a flat vector of length ``d + 1`` (one coordinate
  too many), as a single array in place of the model's per-layer arrays; it cannot be
  unflattened into the model's layout, which is the point.

All three follow the uniform crafting signature (see :mod:`attacks.registry`), so a
client applies them like any update attack; the registry records them as kind
``"fault"``.
"""

from __future__ import annotations

import numpy as np

from attacks._common import as_update_matrix, float_dtype, repeat_rows
from attacks.errors import InjectedFault


def craft_nan(
    honest_updates: np.ndarray, num_attackers: int, rng: np.random.Generator
) -> np.ndarray:
    """Return ``num_attackers`` rows of NaN, each of length ``d``, in the input's float dtype."""
    updates = as_update_matrix(honest_updates)
    return repeat_rows(np.full(updates.shape[1], np.nan, float_dtype(updates)), num_attackers)


def craft_crash(
    honest_updates: np.ndarray, num_attackers: int, rng: np.random.Generator
) -> np.ndarray:
    """Raise :class:`~attacks.errors.InjectedFault`: the client fails instead of answering."""
    raise InjectedFault(
        "injected fault: this Byzantine client runs the 'crash' attack and fails on purpose "
        "to test that the server tolerates failing clients."
    )


def craft_wrong_shape(
    honest_updates: np.ndarray, num_attackers: int, rng: np.random.Generator
) -> np.ndarray:
    """Return ``num_attackers`` zero rows of length ``d + 1`` (one coordinate too many)."""
    updates = as_update_matrix(honest_updates)
    return repeat_rows(np.zeros(updates.shape[1] + 1, float_dtype(updates)), num_attackers)
