"""Membership inference scores and their ROC: the loss attack and offline LiRA.

* **Loss threshold** (Yeom, Giacomelli, Fredrikson, Jha, CSF 2018): a member has a
  lower loss, so the score is ``-loss``.
* **Offline LiRA** (Carlini, Chien, Nasr, Song, Terzis, Tramer, "Membership Inference
  Attacks From First Principles", S&P 2022, Sec. IV-C): the model's confidence in the
  true class, logit-scaled, ``phi = log(p / (1 - p))``, is close to Gaussian over
  models trained without the example. ``k`` shadow models trained the same way on
  other data give each example's ``mu_out`` and ``sigma_out``; the score is the
  one-sided likelihood that the target's ``phi`` is above that distribution,
  ``Phi((phi - mu_out) / sigma_out)``. With few shadows the paper uses one global
  variance for all examples, as here.

:func:`roc_summary` gives the paper's metrics: AUC and the true-positive rate at
1% and 0.1% false positives.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

LOGIT_CLIP = 1e-12  # keeps log(p / (1 - p)) finite for confidences of exactly 0 or 1


def logit_confidence(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``log(p_y / (1 - p_y))`` of each row's true-class probability (LiRA's phi).

    >>> logit_confidence(np.array([[0.5, 0.5], [0.1, 0.9]]), np.array([0, 1])).round(4)
    array([0.    , 2.1972])
    """
    p = np.clip(probabilities[np.arange(len(labels)), labels], LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def loss_scores(losses: np.ndarray) -> np.ndarray:
    """The loss attack's scores: higher means member (``-loss``)."""
    return -np.asarray(losses, dtype=np.float64)


def lira_offline_scores(target_phi: np.ndarray, shadow_out_phi: np.ndarray) -> np.ndarray:
    """Offline LiRA: ``Phi((phi - mu_out) / sigma_out)`` per example.

    ``shadow_out_phi`` is ``(k, n)``: each shadow model's phi on the ``n`` examples, none
    of which it trained on. ``sigma_out`` is global (the paper's choice for small k).

    >>> lira_offline_scores(np.array([1.0, 1.0 + 2**0.5]), np.array([[0.0, 0.0], [2.0, 2.0]]))
    array([0.5       , 0.84134475])
    """
    shadow = np.asarray(shadow_out_phi, dtype=np.float64)
    if shadow.ndim != 2 or shadow.shape[1] != len(target_phi) or shadow.shape[0] < 2:
        raise ValueError(f"need (k >= 2, {len(target_phi)}) shadow phis; got {shadow.shape}")
    mu = shadow.mean(axis=0)
    sigma = max(float(shadow.std(axis=0, ddof=1).mean()), 1e-8)
    return stats.norm.cdf((np.asarray(target_phi, np.float64) - mu) / sigma)


def roc_summary(scores: np.ndarray, is_member: np.ndarray) -> dict[str, float]:
    """AUC and TPR at 1% and 0.1% FPR (the largest TPR with FPR at most that)."""
    fpr, tpr, _ = roc_curve(is_member, scores)
    return {"auc": float(roc_auc_score(is_member, scores)),
            "tpr_at_1pct_fpr": float(tpr[fpr <= 0.01].max()),
            "tpr_at_0.1pct_fpr": float(tpr[fpr <= 0.001].max())}
