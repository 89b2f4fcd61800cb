"""The one-run audit's bound (Steinke, Nasr, Jagielski 2023) against hand computations."""

import math

import numpy as np
import pytest

from fl_app.audit.one_run import (
    audit_bound,
    epsilon_lower_bound,
    guesses_from_scores,
    one_run_p_value,
)


def logit(q):
    return math.log(q / (1 - q))


@pytest.mark.parametrize(("r", "v", "eps"), [(1, 1, 0.0), (2, 2, math.log(3)), (4, 3, 1.0),
                                             (5, 0, 2.0)])
def test_without_delta_the_p_value_is_the_binomial_tail(r, v, eps):
    q = math.exp(eps) / (1 + math.exp(eps))
    tail = sum(math.comb(r, j) * q**j * (1 - q)**(r - j) for j in range(v, r + 1))
    assert one_run_p_value(100, r, v, eps, 0.0) == pytest.approx(tail, rel=1e-12)


def test_delta_adds_2_m_delta_times_the_largest_mean_of_the_binomial_below_v():
    m, delta, eps = 1000, 1e-5, 0.5
    q = math.exp(eps) / (1 + math.exp(eps))
    # r = v = 1: tail q; alpha = P[Bin(1, q) = 0] / 1 = 1 - q
    assert one_run_p_value(m, 1, 1, eps, delta) == pytest.approx(q + 2 * m * delta * (1 - q))
    # r = 3, v = 2: tail P[B >= 2]; alpha = max(P[B = 1] / 1, (P[B = 1] + P[B = 0]) / 2)
    pmf = [math.comb(3, j) * q**j * (1 - q)**(3 - j) for j in range(4)]
    alpha = max(pmf[1], (pmf[1] + pmf[0]) / 2)
    assert one_run_p_value(m, 3, 2, eps, delta) == pytest.approx(
        pmf[2] + pmf[3] + 2 * m * delta * alpha)


def test_all_guesses_right_bound_is_the_logit_of_the_confidence_root():
    """Every one of r guesses right, delta 0: q^r = 1 - confidence, eps = logit(q)."""
    for r, confidence in ((10, 0.95), (50, 0.95), (20, 0.99)):
        q = (1 - confidence) ** (1 / r)
        assert epsilon_lower_bound(r, r, r, 0.0, confidence) == pytest.approx(logit(q), abs=1e-9)


def test_the_bound_rejects_exactly_at_the_confidence_and_is_monotone():
    m, r, v, delta = 1000, 200, 150, 1e-5
    eps = epsilon_lower_bound(m, r, v, delta)
    assert one_run_p_value(m, r, v, eps, delta) < 0.05 <= one_run_p_value(m, r, v, eps + 1e-6,
                                                                         delta)
    assert epsilon_lower_bound(m, r, v + 10, delta) > eps  # more right: a larger bound
    assert epsilon_lower_bound(m, r, v, 1e-3) < eps  # a larger delta explains more
    assert epsilon_lower_bound(m, r, r // 2, delta) == 0.0  # chance: no evidence


def test_guesses_take_the_top_scores_in_and_the_bottom_out():
    scores = np.array([5.0, 1.0, 3.0, 4.0, 2.0, 0.0])
    assert guesses_from_scores(scores, 2, 1).tolist() == [1, 0, 0, 1, 0, -1]
    with pytest.raises(ValueError, match="k_plus"):
        guesses_from_scores(scores, 4, 3)


def test_audit_bound_counts_and_corrects_for_the_counts_it_tried():
    rng = np.random.default_rng(0)
    included = rng.random(1000) < 0.5
    perfect = np.where(included, 1.0, 0.0) + rng.random(1000) * 0.1  # scores separate S
    result = audit_bound(perfect, included, 0.0, counts=[50])
    assert (result.guesses, result.correct) == (100, 100)
    assert result.epsilon_lower_bound == pytest.approx(epsilon_lower_bound(1000, 100, 100, 0.0))
    two = audit_bound(perfect, included, 0.0, counts=[50, 10])
    assert two.epsilon_lower_bound == pytest.approx(
        epsilon_lower_bound(1000, 100, 100, 0.0, 0.975))  # Bonferroni: 0.05 / 2
    noise = audit_bound(rng.random(1000), included, 1e-5, counts=[25, 100, 250])
    assert noise.epsilon_lower_bound < 0.5  # scores that know nothing: near 0
