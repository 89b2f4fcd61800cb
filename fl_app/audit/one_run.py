"""The one-run privacy audit: an empirical lower bound on epsilon from m canaries.

Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training Run"
(NeurIPS 2023). Each of ``m`` canaries is included in training independently with
probability 1/2 (``S_i = +1`` in, ``-1`` out). After one training run the auditor
scores every canary and guesses ``T_i in {-1, 0, +1}`` (0: abstain), ``r`` guesses in
all, ``v`` of them right. If training is (epsilon, delta)-DP, the number right is
nearly dominated by randomized response (their Theorem 5.2):

    P[W >= v] <= P[Binomial(r, q) >= v] + 2 m delta * alpha,    q = e^eps / (1 + e^eps),
    alpha = max_{i = 1..v} P[v - i <= Binomial(r, q) < v] / i.

:func:`one_run_p_value` is that right-hand side; :func:`epsilon_lower_bound` is the
largest epsilon it rejects at the given confidence (bisection on a bound that falls
with epsilon): training with ``v`` of ``r`` right is *not* (epsilon, delta)-DP for any
smaller epsilon, except with probability ``1 - confidence``.

The guesses here are the paper's: the ``k_plus`` highest-scoring canaries are guessed
in, the ``k_minus`` lowest out (:func:`guesses_from_scores`). Trying several counts and
keeping the best would overstate the bound; :func:`audit_bound` tries each of the
given counts at ``confidence`` corrected for how many there are (Bonferroni).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

BISECTION_STEPS = 40  # 2^-40 of the bracket: far below any difference that matters


def _check_counts(m: int, r: int, v: int) -> None:
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """The chance of ``v`` or more right of ``r`` guesses on ``m`` canaries under (eps, delta)-DP.

    >>> one_run_p_value(10, 2, 2, math.log(3), 0.0)  # (3/4)^2
    0.5625
    """
    _check_counts(m, r, v)
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need epsilon >= 0 and delta in [0, 1]; got {epsilon}, {delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon))  # randomized response's accuracy at epsilon
    tail = float(stats.binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    alpha, below = 0.0, 0.0  # below = P[v - i <= Binomial(r, q) < v]
    for i in range(1, v + 1):
        below += float(stats.binom.pmf(v - i, r, q))
        alpha = max(alpha, below / i)
    return min(1.0, tail + 2 * m * delta * alpha)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float,
                        confidence: float = 0.95) -> float:
    """The largest epsilon that ``v`` right of ``r`` rejects at ``confidence`` (0: none).

    >>> round(epsilon_lower_bound(10, 10, 10, 0.0), 4)  # q^10 = 0.05: eps = logit(0.05^0.1)
    1.0519
    """
    _check_counts(m, r, v)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    p = 1.0 - confidence
    if one_run_p_value(m, r, v, 0.0, delta) >= p:
        return 0.0
    low, high = 0.0, 1.0
    while one_run_p_value(m, r, v, high, delta) < p:
        low, high = high, 2 * high
        if high > 1e4:  # every guess right and delta = 0: no finite epsilon explains it
            return math.inf
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        if one_run_p_value(m, r, v, middle, delta) < p:
            low = middle
        else:
            high = middle
    return low


def guesses_from_scores(scores: np.ndarray, k_plus: int, k_minus: int) -> np.ndarray:
    """+1 for the ``k_plus`` highest scores (guessed in), -1 for the ``k_minus`` lowest, else 0.

    Higher score: more likely trained on (e.g. minus the canary's loss).

    >>> guesses_from_scores(np.array([0.1, 0.9, 0.5, 0.3]), 1, 2).tolist()
    [-1, 1, 0, -1]
    """
    scores = np.asarray(scores, dtype=np.float64)
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > len(scores):
        raise ValueError(f"need k_plus + k_minus <= {len(scores)} canaries; got {k_plus} + "
                         f"{k_minus}")
    order = np.argsort(scores, kind="stable")
    guesses = np.zeros(len(scores), dtype=np.int64)
    guesses[order[:k_minus]] = -1
    if k_plus:
        guesses[order[len(scores) - k_plus:]] = 1
    return guesses


@dataclass(frozen=True)
class AuditBound:
    """One audit's result (the keys of ``audit.json``)."""

    epsilon_lower_bound: float
    delta: float
    confidence: float
    m: int
    guesses: int
    correct: int
    k_plus: int
    k_minus: int
    counts_tried: int

    def as_dict(self) -> dict[str, float | int]:
        """The fields, for JSON."""
        return asdict(self)


def audit_bound(scores: np.ndarray, included: np.ndarray, delta: float,
                counts: Sequence[int], confidence: float = 0.95) -> AuditBound:
    """The best bound over guessing ``k`` in and ``k`` out for each ``k`` of ``counts``.

    ``included`` is S (True: the canary was trained on). Each count is tested at
    ``1 - (1 - confidence) / len(counts)`` so that the best of them holds at
    ``confidence`` (Bonferroni).
    """
    scores, included = np.asarray(scores, np.float64), np.asarray(included, bool)
    if scores.shape != included.shape or scores.ndim != 1:
        raise ValueError("scores and included must be 1-d and the same length")
    m = len(scores)
    truth = np.where(included, 1, -1)
    each = 1.0 - (1.0 - confidence) / len(counts)
    best = None
    for k in counts:
        k_plus = k_minus = min(int(k), m // 2)
        guesses = guesses_from_scores(scores, k_plus, k_minus)
        r = int(np.count_nonzero(guesses))
        v = int(np.count_nonzero(guesses == truth))
        bound = epsilon_lower_bound(m, r, v, delta, each)
        if best is None or bound > best.epsilon_lower_bound:
            best = AuditBound(bound, delta, confidence, m, r, v, k_plus, k_minus, len(counts))
    assert best is not None, "counts must not be empty"
    return best
