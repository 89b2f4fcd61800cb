"""The training rows a membership audit asks about, apart from the audit itself.

Clients of a shadow federation drop these rows from their data
(``audit-exclude-members``), and the start check validates their number, so this
module stays light: the audit's scikit-learn, SciPy and scikit-image took about 1.2 s
of every client process's start (on a real device, one process per message).
"""

from __future__ import annotations

import functools

import numpy as np

from fl_app.learning.data import DataConfig, split_size

MEMBER_STREAM = 0x3E3B  # the member draw, apart from every other generator


@functools.lru_cache(maxsize=8)
def member_rows(data: DataConfig, num_members: int) -> np.ndarray:
    """The training rows under audit (independent of the run's seed, sorted)."""
    num_train = split_size(data, "train")
    if not 1 <= num_members <= num_train:
        raise ValueError(f"the audit needs 1 to {num_train} members; got {num_members}")
    rng = np.random.default_rng([MEMBER_STREAM, num_members])
    return np.sort(rng.choice(num_train, size=num_members, replace=False))
