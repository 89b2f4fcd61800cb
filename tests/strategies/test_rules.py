"""The robust aggregation rules and pre-aggregations against their definitions."""

import itertools
import math

import numpy as np
import pytest

from strategies import aggregate, aggregate_detailed, preaggregate, preaggregate_detailed
from strategies.arc import num_clipped
from strategies.errors import ByzantineSizeError, RuleParameterError, UnknownStrategyError
from strategies.krum import krum_select
from strategies.pipeline import MOMENTUM_STATE, AggregationPipeline
from strategies.rules import RULES, get_rule, preaggregation_names, rule_names

RNG = np.random.default_rng(7)
# Rules whose result does not depend on the order of the rows, nor move with a shift.
EQUIVARIANT = ["fedavg", "median", "trimmed-mean", "geometric-median", "bulyan", "krum",
               "multikrum"]  # not MDA: its minimum-diameter subset is rarely unique
# Robust rules: a far outlier must not move them out of the honest updates' box.
ROBUST = ["median", "trimmed-mean", "geometric-median", "bulyan", "krum", "multikrum", "mda",
          "centered-clipping"]


def honest_cloud(n=11, d=6, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


# ------------------------------------------------------------------ exact values
def test_median_odd_even_and_identical_rows():
    x = np.array([[3.0, -1.0], [1.0, 5.0], [2.0, 2.0]])
    assert aggregate("median", x, num_byzantine=1).tolist() == [2.0, 2.0]
    even = np.array([[0.0], [1.0], [10.0], [3.0]])
    assert aggregate("median", even, num_byzantine=1).tolist() == [2.0]
    same = np.tile([[1.5, -2.0]], (5, 1))
    assert aggregate("median", same, num_byzantine=2).tolist() == [1.5, -2.0]
    np.testing.assert_array_equal(aggregate("median", honest_cloud()), np.median(honest_cloud(),
                                                                                   axis=0))


def test_trimmed_mean_by_count_fraction_and_declared_f():
    x = np.array([[0.0], [1.0], [2.0], [3.0], [100.0], [-100.0]])
    assert aggregate("trimmed-mean", x, num_byzantine=1).tolist() == [1.5]  # drops +-100
    assert aggregate("trimmed-mean", x, num_byzantine=0).tolist() == [1.0]  # f = 0: the mean
    assert aggregate("trimmed-mean", x, num_byzantine=0, trim=2).tolist() == [1.5]
    assert aggregate("trimmed-mean", x, fraction=0.2).tolist() == [1.5]  # floor(1.2) = 1
    with pytest.raises(RuleParameterError, match="not both"):
        aggregate("trimmed-mean", x, trim=1, fraction=0.2)
    # the largest allowed b (n = 2b + 1) is the median
    y = honest_cloud(n=7)
    np.testing.assert_allclose(aggregate("trimmed-mean", y, num_byzantine=3),
                               np.median(y, axis=0), rtol=0, atol=1e-15)


def test_geometric_median_meets_its_optimality_condition():
    x = honest_cloud(n=9, d=4)
    result = aggregate_detailed("geometric-median", x, num_byzantine=2, tolerance=1e-12)
    # At the minimiser of sum ||z - x_i|| the unit vectors to the points sum to ~0
    units = (x - result.update) / np.linalg.norm(x - result.update, axis=1, keepdims=True)
    assert np.linalg.norm(units.sum(axis=0)) < 1e-4
    assert 1 < result.iterations < 1000
    # collinear points: the geometric median is the 1-D median
    line = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    np.testing.assert_allclose(aggregate("geometric-median", line, num_byzantine=1,
                                         tolerance=1e-12), [1.0, 1.0], atol=1e-5)


def test_geometric_median_stops_at_the_stated_tolerance():
    x = honest_cloud(n=15, d=8)
    loose = aggregate_detailed("geometric-median", x, tolerance=1e-2)
    tight = aggregate_detailed("geometric-median", x, tolerance=1e-10)
    assert loose.iterations < tight.iterations
    objective = [np.linalg.norm(x - r.update, axis=1).sum() for r in (loose, tight)]
    assert objective[1] <= objective[0] <= objective[1] * (1 + 1e-2)
    capped = aggregate_detailed("geometric-median", x, tolerance=1e-12, max_iterations=3)
    assert capped.iterations == 3


def naive_bulyan(x, f):
    """Bulyan written out from the paper, loop by loop (Flower's neighbour convention)."""
    remaining, chosen = list(range(len(x))), []
    while len(chosen) < len(x) - 2 * f:
        k = len(remaining)
        scores = [sum(sorted(float(((x[i] - x[j]) ** 2).sum()) for j in remaining if j != i)
                      [:max(k - f - 2, 1)]) for i in remaining]
        chosen.append(remaining.pop(int(np.argmin(scores))))
    values = x[sorted(chosen)]
    beta = len(chosen) - 2 * f
    out = []
    for column in values.T:
        med = np.median(column)
        out.append(column[np.argsort(np.abs(column - med), kind="stable")[:beta]].mean())
    return np.array(out), chosen


@pytest.mark.parametrize("n, f", [(7, 1), (11, 2), (15, 3), (3, 0)])
def test_bulyan_equals_the_definition(n, f):
    x = honest_cloud(n=n, d=5, seed=n)
    for i in range(f):  # f far updates, far from each other too
        x[i, i % 5] += 50.0 * (i + 1)
    result = aggregate_detailed("bulyan", x, num_byzantine=f)
    want, chosen = naive_bulyan(x, f)
    np.testing.assert_allclose(result.update, want, rtol=1e-12)
    assert result.selected == sorted(chosen)
    assert not set(range(f)) & set(result.selected)  # the far ones are not chosen


def test_bulyan_with_f_0_is_the_mean_and_needs_4f_3():
    x = honest_cloud(n=5)
    np.testing.assert_allclose(aggregate("bulyan", x), x.mean(axis=0), rtol=1e-12)
    with pytest.raises(ByzantineSizeError, match=r"n >= 4f \+ 3 clients; got n=10, f=2"):
        aggregate("bulyan", honest_cloud(n=10), num_byzantine=2)
    aggregate("bulyan", honest_cloud(n=11), num_byzantine=2)  # the largest allowed f


def test_bulyan_breaks_a_tie_towards_the_smaller_values():
    # theta = n = 3 (f = 0), beta = 3: no tie; with the 1-D values 0, 1, 2 and f = 0 all
    # are averaged. A tie needs beta < theta: values 0, 1, 2 around the median 1, beta 2.
    from strategies.bulyan import _mean_closest_to_median

    assert _mean_closest_to_median(np.array([[0.0, 1.0, 2.0]]), 2).tolist() == [0.5]


def test_centered_clipping_by_hand_and_its_state():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [10.0, 0.0]])
    result = aggregate_detailed("centered-clipping", x, tau=2.0, center=np.zeros(2))
    # 1/3 * ((1, 0) + (0, 1) + 2 * (1, 0)) = (1, 1/3); row 2 was clipped
    np.testing.assert_allclose(result.update, [1.0, 1 / 3])
    assert result.clipped == [2]
    np.testing.assert_array_equal(result.state["center"], result.update)
    two = aggregate_detailed("centered-clipping", x, tau=2.0, iterations=2)
    again = aggregate_detailed("centered-clipping", x, tau=2.0, center=result.update)
    np.testing.assert_allclose(two.update, again.update)  # L = 2 is L = 1 twice
    big = aggregate("centered-clipping", x, tau=1e9)
    np.testing.assert_allclose(big, x.mean(axis=0))  # nothing clipped: the mean


def brute_force_mda(x, f):
    best = min(itertools.combinations(range(len(x)), len(x) - f),
               key=lambda s: max((np.linalg.norm(x[i] - x[j]) for i in s for j in s),
                                 default=0.0))
    return x[list(best)].mean(axis=0), list(best)


@pytest.mark.parametrize("n, f", [(5, 1), (7, 2), (9, 4), (4, 0)])
def test_mda_equals_brute_force(n, f):
    x = honest_cloud(n=n, d=3, seed=n + f)
    x[0] *= 50
    result = aggregate_detailed("mda", x, num_byzantine=f)
    want, rows = brute_force_mda(x, f)
    np.testing.assert_allclose(result.update, want, rtol=1e-12)
    assert result.selected == rows


def test_mda_refuses_too_many_subsets_naming_the_key():
    with pytest.raises(ByzantineSizeError, match="mda-max-subsets = 100"):
        aggregate("mda", honest_cloud(n=12), num_byzantine=3, max_subsets=100)  # C = 220


def test_krum_and_multikrum_are_the_existing_math():
    x = honest_cloud(n=9)
    assert aggregate_detailed("krum", x, num_byzantine=2).selected == [
        int(krum_select(x, 2)[0])]
    m = aggregate_detailed("multikrum", x, num_byzantine=2, m=3)
    np.testing.assert_array_equal(m.update, x[krum_select(x, 2, 3)].mean(axis=0))
    assert len(aggregate_detailed("multikrum", x, num_byzantine=2).selected) == 7  # n - f


# ------------------------------------------------------------------ properties
@pytest.mark.parametrize("name", EQUIVARIANT)
def test_permutation_invariance_and_translation_equivariance(name):
    x = honest_cloud(n=11, d=5, seed=3)
    f = 2
    base = aggregate(name, x, num_byzantine=f)
    order = np.random.default_rng(1).permutation(len(x))
    np.testing.assert_allclose(aggregate(name, x[order], num_byzantine=f), base, atol=1e-7)
    shift = np.arange(5.0) * 3 - 4
    np.testing.assert_allclose(aggregate(name, x + shift, num_byzantine=f), base + shift,
                               atol=1e-6)


@pytest.mark.parametrize("name", ROBUST)
def test_one_outlier_at_1e9_stays_outside(name):
    honest = honest_cloud(n=10, d=4, seed=5)
    x = np.vstack([honest, np.full((1, 4), 1e9)])
    got = aggregate(name, x, num_byzantine=1)
    assert np.all(got >= honest.min(axis=0) - 1e-9) and np.all(got <= honest.max(axis=0) + 1e-9)


def test_every_rule_checks_its_size_and_refuses_weights_it_does_not_use():
    sizes = {"median": 5, "trimmed-mean": 5, "geometric-median": 5, "bulyan": 11, "krum": 7,
             "multikrum": 7, "mda": 5, "centered-clipping": 1, "fedavg": 1}
    assert set(sizes) == set(rule_names())
    for name, smallest in sizes.items():
        assert AggregationPipeline(name, num_byzantine=2).min_clients() == smallest, name
        if smallest > 1:
            with pytest.raises(ByzantineSizeError):
                aggregate(name, honest_cloud(n=smallest - 1), num_byzantine=2)
        aggregate(name, honest_cloud(n=smallest), num_byzantine=2)
        if not get_rule(name).weighted:
            with pytest.raises(RuleParameterError, match="takes no weights"):
                aggregate(name, honest_cloud(n=smallest), num_byzantine=2,
                          weights=[1.0] * smallest)


def test_weighted_rules_use_the_weights():
    x = np.array([[0.0], [1.0], [10.0]])
    assert aggregate("fedavg", x, weights=[1, 1, 2]).tolist() == [5.25]
    z = aggregate("geometric-median", x, weights=[1, 1, 10])  # a heavy point is the median
    np.testing.assert_allclose(z, [10.0], atol=1e-4)


def test_unknown_names_and_parameters_are_clear_errors():
    with pytest.raises(UnknownStrategyError, match="bulyan"):
        aggregate("dnc", honest_cloud())
    with pytest.raises(RuleParameterError, match=r"takes the parameters \['fraction', 'trim'\]"):
        aggregate("trimmed-mean", honest_cloud(), beta=0.1)
    with pytest.raises(RuleParameterError, match="tau=-1"):
        aggregate("centered-clipping", honest_cloud(), tau=-1.0)
    with pytest.raises(UnknownStrategyError, match="nnm"):
        preaggregate("mixing", honest_cloud())


# ------------------------------------------------------------------ pre-aggregation
def test_nnm_averages_each_rows_n_minus_f_nearest():
    x = np.array([[0.0], [1.0], [3.0], [10.0]])
    out = preaggregate("nnm", x, num_byzantine=2)  # the 2 nearest, itself included
    assert out.ravel().tolist() == [0.5, 0.5, 2.0, 6.5]
    assert np.array_equal(preaggregate("nnm", x, num_byzantine=0), np.tile(x.mean(), (4, 1)))


def test_bucketing_is_seeded_and_averages_each_bucket():
    x = honest_cloud(n=7)
    first = preaggregate_detailed("bucketing", x, size=3, rng=np.random.default_rng(4))
    again = preaggregate_detailed("bucketing", x, size=3, rng=np.random.default_rng(4))
    assert first.origins == again.origins and np.array_equal(first.updates, again.updates)
    assert [len(o) for o in first.origins] == [3, 3, 1]
    assert sorted(i for members in first.origins for i in members) == list(range(7))
    for row, members in zip(first.updates, first.origins, strict=True):
        np.testing.assert_allclose(row, x[members].mean(axis=0))


def test_clipping_and_arc():
    x = np.array([[3.0, 4.0], [0.0, 1.0], [0.0, 0.5], [6.0, 8.0], [0.3, 0.4]])
    out = preaggregate_detailed("clipping", x, max_norm=1.0)
    np.testing.assert_allclose(np.linalg.norm(out.updates, axis=1), [1, 1, 0.5, 1, 0.5])
    assert out.clipped == [0, 3]
    # ARC with n = 5, f = 1: k = floor(2 * 1 * 4 / 5) = 1 clipped, to the 2nd largest norm 5
    assert num_clipped(5, 1) == 1
    arc = preaggregate_detailed("arc", x, num_byzantine=1)
    np.testing.assert_allclose(arc.updates[3], [3.0, 4.0])
    assert arc.clipped == [3] and np.array_equal(arc.updates[[0, 1, 2, 4]], x[[0, 1, 2, 4]])
    assert np.array_equal(preaggregate("arc", x, num_byzantine=0), x)


def test_arc_clips_floor_2f_n_minus_f_over_n_for_every_size():
    for n in range(1, 30):
        for f in range(n + 1):
            assert num_clipped(n, f) == math.floor(2 * f * (n - f) / n + 1e-12)


# ------------------------------------------------------------------ the pipeline
def test_pipeline_maps_what_the_rule_did_back_to_clients():
    x = honest_cloud(n=10)
    x[5] += 100.0
    pipe = AggregationPipeline("krum", num_byzantine=1, preaggregation=(("bucketing",
                                                                          {"size": 2}),))
    result = pipe.aggregate(x, [1] * 10, server_round=3)
    assert len(result.selected) == 2 and 5 not in result.selected  # one bucket, two clients
    assert result.scores is None  # bucket scores are not client scores
    assert pipe.min_clients() == 2 * (2 * 1 + 3) - 1  # ceil(n / 2) >= 2f + 3
    same = AggregationPipeline("krum", num_byzantine=1,
                               preaggregation=(("bucketing", {"size": 2}),))
    assert same.aggregate(x, [1] * 10, server_round=3).selected == result.selected
    clipped = AggregationPipeline("median", 1, preaggregation=(("clipping", {"max_norm": 1.0}),))
    assert 5 in clipped.aggregate(x, [1] * 10, server_round=1).clipped


def test_server_momentum_is_fedavgm_and_the_default_step_is_the_aggregate():
    x = honest_cloud(n=4)
    plain = AggregationPipeline("fedavg").aggregate(x, [1, 2, 3, 4], 1).update
    assert plain is not None and np.array_equal(plain, aggregate("fedavg", x,
                                                                 weights=[1, 2, 3, 4]))
    pipe = AggregationPipeline("median", server_learning_rate=0.5, server_momentum=0.9)
    buffer, steps = np.zeros(x.shape[1]), []
    for server_round in range(1, 4):
        shifted = x + server_round
        steps.append(pipe.aggregate(shifted, [1] * 4, server_round).update)
        buffer = 0.9 * buffer + np.median(shifted, axis=0)
        np.testing.assert_allclose(steps[-1], 0.5 * buffer)
    np.testing.assert_allclose(pipe.state[MOMENTUM_STATE], buffer)
    with pytest.raises(RuleParameterError, match="server-momentum"):
        AggregationPipeline("median", server_momentum=1.0)


def test_every_registered_name_is_reachable_by_aggregate():
    x = honest_cloud(n=11)
    for name in RULES:
        assert aggregate(name, x, num_byzantine=1).shape == (x.shape[1],)
    for name in preaggregation_names():
        assert preaggregate(name, x, num_byzantine=1).shape[1] == x.shape[1]
