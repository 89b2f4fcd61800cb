"""Adversarial arrays thrown at every aggregator and at update validation (hypothesis)."""

import numpy as np
from flwr.common import parameters_to_ndarrays
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from strategies.registry import make_strategy, strategy_names
from strategies.rules import preaggregation_names
from strategies.updates import malformed_reason
from tests.strategies.test_fedavg import FakeProxy, fit_res

SHAPES = [(3,), (2, 2)]
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1e308, -1e308, 1e-308, 5e-324, 1e154]),
)
dtypes = st.sampled_from([np.float64, np.float32, np.float16, np.int32, np.int64])


@st.composite
def client_arrays(draw):
    """One client's result: usually well-shaped, sometimes not; any values and dtypes."""
    if draw(st.integers(0, 9)) == 0:  # wrong structure
        return [np.zeros(draw(st.integers(1, 5)))]
    out = []
    for shape in SHAPES:
        dtype = draw(dtypes)
        elements = (st.integers(-(2**31), 2**31 - 1) if np.issubdtype(dtype, np.integer)
                    else values)
        a = draw(arrays(np.float64 if not np.issubdtype(dtype, np.integer) else dtype,
                        shape, elements=elements))
        with np.errstate(over="ignore", invalid="ignore"):
            out.append(a.astype(dtype))
    return out


@st.composite
def rounds(draw):
    clients = draw(st.lists(client_arrays(), min_size=1, max_size=9))
    if draw(st.booleans()):  # duplicates
        clients = clients + clients[: draw(st.integers(0, len(clients)))]
    counts = draw(st.lists(st.integers(0, 10**6), min_size=len(clients),
                           max_size=len(clients)))
    return clients, counts


def assert_round_is_finite(strategy, clients, counts):
    """One round of these results keeps every array's shape and lets no NaN/inf in."""
    strategy._global = [np.ones(s, dtype=np.float32) for s in SHAPES]
    results = [(FakeProxy(str(i)), fit_res(c, n))
               for i, (c, n) in enumerate(zip(clients, counts, strict=True))]
    params, _ = strategy.aggregate_fit(1, results, [])
    new = parameters_to_ndarrays(params)
    assert [a.shape for a in new] == SHAPES
    assert all(np.all(np.isfinite(a)) for a in new)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds(), st.sampled_from(strategy_names()), st.integers(0, 2),
       st.sampled_from([None, 1e6]))
def test_no_aggregator_crashes_or_lets_non_finite_values_in(round_, name, f, norm_limit):
    clients, counts = round_
    strategy = make_strategy(name, num_byzantine=f, max_update_norm=norm_limit)
    assert_round_is_finite(strategy, clients, counts)


@settings(max_examples=200, deadline=None)
@given(client_arrays())
def test_validation_rejects_every_non_finite_or_misshapen_result(arrays_):
    like = [np.zeros(s) for s in SHAPES]
    reason = malformed_reason(arrays_, like)
    well_formed = (len(arrays_) == len(like)
                   and all(a.shape == r.shape for a, r in zip(arrays_, like, strict=False))
                   and all(np.all(np.isfinite(a)) for a in arrays_))
    assert (reason is None) == well_formed


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds(), st.sampled_from(strategy_names()), st.integers(0, 2),
       st.lists(st.sampled_from(preaggregation_names()), max_size=2),
       st.sampled_from([0.0, 0.9]))
def test_no_pipeline_crashes_or_lets_non_finite_values_in(round_, name, f, steps, momentum):
    clients, counts = round_
    strategy = make_strategy(name, num_byzantine=f, preaggregation=tuple((s, {}) for s in steps),
                             server_momentum=momentum)
    assert_round_is_finite(strategy, clients, counts)
