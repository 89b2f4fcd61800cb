"""Label flipping, a data-poisoning attack: honest training on relabelled data.

The Byzantine client trains honestly, but with every label mapped by

    y -> C - 1 - y,    y in {0, ..., C - 1},

with ``C`` the number of classes (on CIFAR-10: ``y -> 9 - y``). Tolpegin, Truex, Gursoy
and Liu, "Data Poisoning Attacks Against Federated Learning Systems", ESORICS 2020,
flip one source class to one target class; we use the all-class fixed mapping above,
the common form in Byzantine-robust benchmarks, which poisons every class and needs no
choice of source and target. It is an involution (flipping twice is the identity) and
a permutation of the classes.

Not an update-crafting attack: the registry records it as kind ``"data"``, and a client
poisons its training data with :func:`poison_label_flip` before honest local training.
"""

from __future__ import annotations

import numpy as np

from attacks._common import check_count
from attacks.errors import AttackParameterError


def flip_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Return ``num_classes - 1 - labels`` (a new array of the input's integer dtype).

    Raises:
        AttackParameterError: ``num_classes < 2``, labels not integers, or a label
            outside ``[0, num_classes)``.

    >>> import numpy as np
    >>> flip_labels(np.array([0, 1, 9]), num_classes=10)
    array([9, 8, 0])

    """
    c = check_count("num_classes", num_classes, 2)
    y = np.asarray(labels)
    if not np.issubdtype(y.dtype, np.integer):
        raise AttackParameterError(
            f"label flipping needs integer class labels; got dtype {y.dtype}."
        )
    if y.size and (y.min() < 0 or y.max() >= c):
        raise AttackParameterError(
            f"label flipping needs labels in [0, num_classes) = [0, {c}); "
            f"got labels from {y.min()} to {y.max()}."
        )
    return (c - 1 - y).astype(y.dtype, copy=False)


def poison_label_flip(x: np.ndarray, y: np.ndarray, num_classes: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The data-attack entry: the images unchanged, every label flipped (``rng`` unused)."""
    return x, flip_labels(y, num_classes)
