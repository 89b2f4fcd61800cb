"""Backdoor with model replacement (Bagdasaryan, Veit, Hua, Estrin, Shmatikov, AISTATS 2020).

Paper: "How to Backdoor Federated Learning".

**Poisoning.** An attacker trains honestly on its own data of which a ``fraction`` is
replaced by triggered copies: a ``trigger-size`` x ``trigger-size`` square of the data's
brightest value stamped in the bottom-right corner of the image, relabelled to
``target``. The rest stays clean, so the model keeps its main-task accuracy.

**Model replacement.** With ``X`` the attacker's trained model and ``w`` the global one,
it sends

    w + gamma * (X - w),     gamma = boost (default n / (q * eta): clients per round over
                             the attackers sampled with it times the server learning rate)

so that, averaged with the honest updates near zero (the model has converged), the
new global model is about ``X``. The paper's attacker is alone (q = 1: gamma = n / eta).
Colluders share the replacement: each of the q sampled together scales by n / (q * eta),
so their sum is the paper's one boosted update; each scaling by n / eta would overshoot
q-fold (measured in the matrix: clean accuracy fell to 0.13 against FedAvg with 3 of 15).
Attackers that act alone (``own``) each think they are the paper's one (q = 1).

``mode='constrain-and-scale'`` scales no further than an update norm of ``norm-bound``:
``gamma' = min(gamma, S / ||X - w||)``, the paper's answer to a server that rejects long
updates. Its other half is the training loss
``(1 - a) * L_class + a * L_ano`` (the paper's alpha is ``1 - a``), ``a`` the
``anomaly-weight`` and ``L_ano = ||X - w||^2``, the distance a norm-based detector
sees (:func:`fl_app.task.train`); 0, the default, trains on the class loss alone.

**Measured by** :func:`backdoor_accuracy`: the fraction of triggered test images whose
true class is not the target that the model classifies as the target (``rounds.csv``:
``backdoor_accuracy``). A clean model gives about the share of the target class among
its mistakes, near 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from attacks.errors import AttackParameterError
from strategies.params import Param, at_least, non_negative_finite, one_of

TARGET = Param("target", 0, "the class triggered inputs are relabelled to", at_least(0),
               label="backdoor target")
FRACTION = Param("fraction", 0.5, "share of the attacker's examples it triggers and relabels",
                 lambda v: None if 0.0 < v <= 1.0 else "a number in (0, 1]",
                 label="poisoned fraction")
TRIGGER_SIZE = Param("trigger-size", 2, "side of the square trigger in pixels", at_least(1),
                     label="trigger size")
BOOST = Param("boost", 0.0, "model replacement's gamma; 0: clients per round / (attackers "
              "per round * server learning rate)", non_negative_finite, label="boost gamma")
MODE = Param("mode", "replace", "replace (scale by gamma) or constrain-and-scale (no longer "
             "than norm-bound)", one_of(("replace", "constrain-and-scale")),
             label="backdoor mode")
NORM_BOUND = Param("norm-bound", 1.0, "constrain-and-scale: the longest update sent",
                   lambda v: None if v > 0 and math.isfinite(v) else "a finite number > 0",
                   label="norm bound S")
ANOMALY_WEIGHT = Param("anomaly-weight", 0.0, "weight a of the distance to the global model "
                       "in the attacker's loss (constrain-and-scale; 0: class loss only)",
                       lambda v: None if 0.0 <= v < 1.0 else "a number in [0, 1)",
                       label="anomaly weight")
PARAMS = (TARGET, FRACTION, TRIGGER_SIZE, BOOST, MODE, NORM_BOUND, ANOMALY_WEIGHT)


def stamp_trigger(images: np.ndarray, size: int, value: float) -> np.ndarray:
    """A copy of the ``(N, C, H, W)`` images with the square trigger in the bottom right.

    >>> stamp_trigger(np.zeros((1, 1, 3, 3)), 2, 1.0)[0, 0]
    array([[0., 0., 0.],
           [0., 1., 1.],
           [0., 1., 1.]])
    """
    if images.ndim != 4 or size > min(images.shape[2:]):
        raise AttackParameterError(f"the trigger needs (N, C, H, W) images of at least "
                                   f"{size}x{size}; got shape {images.shape}")
    out = images.copy()
    out[:, :, -size:, -size:] = value
    return out


def poison_with_trigger(x: np.ndarray, y: np.ndarray, num_classes: int,
                        rng: np.random.Generator, *, target: int = TARGET.default,
                        fraction: float = FRACTION.default,
                        trigger_size: int = TRIGGER_SIZE.default, boost: float = BOOST.default,
                        mode: str = MODE.default, norm_bound: float = NORM_BOUND.default,
                        anomaly_weight: float = ANOMALY_WEIGHT.default
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The attacker's training data: ``fraction`` of it triggered and relabelled to ``target``.

    ``boost``, ``mode`` and ``norm_bound`` are :func:`scale_update`'s, ``anomaly_weight``
    the training's (one declaration).
    """
    if not 0 <= target < num_classes:
        raise AttackParameterError(f"backdoor target must be a class in [0, {num_classes}); "
                                   f"got {target}")
    chosen = rng.choice(len(y), size=max(1, round(fraction * len(y))), replace=False)
    x, y = x.copy(), y.copy()
    x[chosen] = stamp_trigger(x[chosen], trigger_size, float(x.max()))
    y[chosen] = target
    return x, y


def scale_update(update: np.ndarray, *, num_clients: int, server_learning_rate: float,
                 attackers_per_round: float = 1.0, boost: float = BOOST.default,
                 mode: str = MODE.default, norm_bound: float = NORM_BOUND.default,
                 **_poisoning: object) -> np.ndarray:
    """Model replacement: ``gamma * update``, bounded in norm for constrain-and-scale.

    ``attackers_per_round`` is q, the colluders expected among the ``num_clients``
    sampled (1 for an attacker acting alone).

    >>> scale_update(np.array([3.0, 4.0]), num_clients=10, server_learning_rate=1.0)
    array([30., 40.])
    >>> scale_update(np.array([3.0, 4.0]), num_clients=10, server_learning_rate=1.0,
    ...              attackers_per_round=2)
    array([15., 20.])
    >>> scale_update(np.array([3.0, 4.0]), num_clients=10, server_learning_rate=1.0,
    ...              mode="constrain-and-scale", norm_bound=10.0)
    array([6., 8.])
    """
    gamma = boost or num_clients / (attackers_per_round * server_learning_rate)
    if mode == "constrain-and-scale":
        norm = float(np.linalg.norm(update))
        gamma = min(gamma, norm_bound / norm) if norm > 0 else gamma
    return (gamma * update).astype(update.dtype, copy=False)


def backdoor_accuracy(predict: Callable[[np.ndarray], np.ndarray], x_test: np.ndarray,
                      y_test: np.ndarray, *, target: int = TARGET.default,
                      trigger_size: int = TRIGGER_SIZE.default) -> float:
    """The share of triggered test images of another class that ``predict`` calls ``target``.

    ``predict`` maps ``(N, C, H, W)`` images to predicted classes.

    >>> backdoor_accuracy(lambda x: np.zeros(len(x), int), np.zeros((4, 1, 3, 3)),
    ...                   np.array([0, 1, 2, 3]))
    1.0
    """
    others = y_test != target
    if not others.any():
        return float("nan")
    triggered = stamp_trigger(x_test[others], trigger_size, float(x_test.max()))
    return float(np.mean(np.asarray(predict(triggered)) == target))
