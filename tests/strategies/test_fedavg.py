import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_proxy import ClientProxy

from strategies.fedavg import FitRoundReport, UpdateSpaceFedAvg
from strategies.mean import weighted_mean_update
from strategies.registry import UnknownStrategyError, make_strategy, strategy_names
from strategies.updates import flatten, malformed_reason, stack_updates, unflatten


class FakeProxy(ClientProxy):
    def get_properties(self, ins, timeout, group_id): ...
    def get_parameters(self, ins, timeout, group_id): ...
    def fit(self, ins, timeout, group_id): ...
    def evaluate(self, ins, timeout, group_id): ...
    def reconnect(self, ins, timeout, group_id): ...


def fit_res(arrays, num_examples, **metrics):
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), num_examples, metrics)


def run_round(strategy, global_w, client_ws, counts):
    strategy._global = global_w
    results = [(FakeProxy(str(i)), fit_res(w, n))
               for i, (w, n) in enumerate(zip(client_ws, counts, strict=True))]
    params, _ = strategy.aggregate_fit(1, results, [])
    return parameters_to_ndarrays(params)


def test_weighted_mean_by_hand():
    updates = np.array([[1.0, 2.0], [3.0, -2.0], [0.0, 4.0]])
    # weights 1/6, 2/6, 3/6: x = (1 + 6 + 0)/6 = 7/6 ; y = (2 - 4 + 12)/6 = 10/6
    np.testing.assert_allclose(weighted_mean_update(updates, [1, 2, 3]), [7 / 6, 10 / 6])


def test_fedavg_aggregates_in_update_space_by_hand():
    g = [np.array([[1.0, 1.0]], dtype=np.float32), np.array([0.5], dtype=np.float32)]
    w1 = [np.array([[2.0, 0.0]], dtype=np.float32), np.array([1.5], dtype=np.float32)]
    w2 = [np.array([[1.0, 4.0]], dtype=np.float32), np.array([-0.5], dtype=np.float32)]
    # updates d1 = (1, -1, 1), d2 = (0, 3, -1); weights 100/400, 300/400
    # mean = (0.25, -0.25 + 2.25, 0.25 - 0.75) = (0.25, 2.0, -0.5); new = g + mean
    seen = []
    strategy = UpdateSpaceFedAvg(on_fit_round=seen.append)
    new = run_round(strategy, g, [w1, w2], [100, 300])
    np.testing.assert_allclose(new[0], [[1.25, 3.0]], rtol=1e-6)
    np.testing.assert_allclose(new[1], [0.0], atol=1e-7)
    assert new[0].dtype == np.float32
    assert seen[0].selected == [0, 1] and not seen[0].kept_global


def test_fedavg_equals_flower_weighted_average_of_weights():
    rng = np.random.default_rng(0)
    g = [rng.normal(size=(4, 3)), rng.normal(size=5)]
    clients = [[rng.normal(size=(4, 3)), rng.normal(size=5)] for _ in range(4)]
    counts = [10, 1, 7, 30]
    new = run_round(UpdateSpaceFedAvg(), g, clients, counts)
    for k in range(2):
        expect = sum(n * c[k] for n, c in zip(counts, clients, strict=True)) / sum(counts)
        np.testing.assert_allclose(new[k], expect, rtol=1e-10, atol=1e-12)


def test_malformed_results_are_rejected_and_counted():
    g = [np.zeros(3, dtype=np.float32)]
    good = [np.ones(3, dtype=np.float32)]
    nan = [np.array([1.0, np.nan, 0.0], dtype=np.float32)]
    wrong = [np.ones(4, dtype=np.float32)]
    seen: list[FitRoundReport] = []
    new = run_round(UpdateSpaceFedAvg(on_fit_round=seen.append), g, [good, nan, wrong], [1, 1, 1])
    np.testing.assert_allclose(new[0], [1, 1, 1])
    assert [cid for cid, _ in seen[0].rejected] == ["1", "2"]
    assert seen[0].num_failures == 2


def test_no_usable_result_keeps_global_model():
    g = [np.full(2, 7.0, dtype=np.float32)]
    seen: list[FitRoundReport] = []
    new = run_round(UpdateSpaceFedAvg(on_fit_round=seen.append), g,
                    [[np.array([np.inf, 0], dtype=np.float32)]], [5])
    np.testing.assert_array_equal(new[0], g[0])
    assert seen[0].kept_global and "usable" in seen[0].note


def test_flatten_roundtrip_and_update_matrix():
    like = [np.zeros((2, 2), np.float32), np.zeros(3, np.float32)]
    v = np.arange(7, dtype=np.float64)
    back = unflatten(v, like)
    np.testing.assert_array_equal(flatten(back), v)
    upd = stack_updates([back], like)
    np.testing.assert_array_equal(upd[0], v)
    with pytest.raises(ValueError, match="7 entries"):
        unflatten(np.zeros(7), like[:1])


@pytest.mark.parametrize("arrays, fragment", [
    ([np.zeros(2)], "1 arrays instead of 2"),
    ([np.zeros(2), np.zeros(4)], "shape"),
    ([np.zeros(2), np.array(["a", "b", "c"])], "non-numeric dtype"),
    ([np.zeros(2), np.array([0, 0, np.inf])], "NaN or Inf"),
])
def test_malformed_reason(arrays, fragment):
    assert fragment in malformed_reason(arrays, [np.zeros(2), np.zeros(3)])


def test_registry_lists_names_on_unknown():
    assert {"fedavg", "krum", "multikrum"} <= set(strategy_names())
    with pytest.raises(UnknownStrategyError, match="fedavg"):
        make_strategy("dnc")


def test_absurd_norms_are_rejected_and_the_rest_aggregated():
    g = [np.zeros(3)]
    seen: list[FitRoundReport] = []
    strategy = UpdateSpaceFedAvg(on_fit_round=seen.append, max_update_norm=10.0)
    new = run_round(strategy, g, [[np.ones(3)], [np.full(3, 1e20)], [np.full(3, 3.0)]],
                    [1, 1, 1])
    np.testing.assert_allclose(new[0], [2.0, 2.0, 2.0])
    assert [cid for cid, _ in seen[0].rejected] == ["1"]
    assert "max-update-norm" in seen[0].rejected[0][1]
    assert seen[0].client_ids == ["0", "2"] and seen[0].num_failures == 1


def test_more_failures_than_allowed_keeps_the_global_model():
    g = [np.zeros(2)]
    seen: list[FitRoundReport] = []
    strategy = UpdateSpaceFedAvg(on_fit_round=seen.append, max_failures=1)
    strategy._global = g
    results = [(FakeProxy("0"), fit_res([np.ones(2)], 5))]
    params, _ = strategy.aggregate_fit(3, results, [RuntimeError("a"), RuntimeError("b")])
    np.testing.assert_array_equal(parameters_to_ndarrays(params)[0], g[0])
    assert seen[0].kept_global and "accept-failures" in seen[0].note
    params, _ = strategy.aggregate_fit(4, results, [RuntimeError("a")])
    np.testing.assert_array_equal(parameters_to_ndarrays(params)[0], np.ones(2))


def test_zero_example_results_abstain():
    seen: list[FitRoundReport] = []
    new = run_round(UpdateSpaceFedAvg(on_fit_round=seen.append), [np.zeros(2)],
                    [[np.ones(2)], [np.full(2, 5.0)]], [4, 0])
    np.testing.assert_array_equal(new[0], np.ones(2))
    assert [cid for cid, _ in seen[0].abstained] == ["1"] and seen[0].num_failures == 0


def test_result_order_does_not_depend_on_arrival_order():
    rng = np.random.default_rng(1)
    g = [np.zeros(4)]
    clients = [[rng.normal(size=4)] for _ in range(5)]
    results = [(FakeProxy(str(i)), fit_res(c, 1)) for i, c in enumerate(clients)]
    outs = []
    for order in ([0, 1, 2, 3, 4], [4, 2, 0, 3, 1]):
        seen: list[FitRoundReport] = []
        strategy = make_strategy("krum", num_byzantine=1, on_fit_round=seen.append)
        strategy._global = g
        params, _ = strategy.aggregate_fit(1, [results[i] for i in order], [])
        outs.append((parameters_to_ndarrays(params)[0], seen[0].client_ids, seen[0].selected))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    assert outs[0][1:] == outs[1][1:]


def test_krum_round_with_too_few_results_keeps_the_global_model():
    seen: list[FitRoundReport] = []
    strategy = make_strategy("krum", num_byzantine=2, on_fit_round=seen.append)
    g = [np.zeros(3)]
    # 6 results, one NaN: 5 usable < 2f + 3 = 7
    clients = [[np.full(3, float(i))] for i in range(5)] + [[np.full(3, np.nan)]]
    new = run_round(strategy, g, clients, [1] * 6)
    np.testing.assert_array_equal(new[0], g[0])
    assert seen[0].kept_global and "n >= 2f + 3 clients; got n=5, f=2" in seen[0].note
