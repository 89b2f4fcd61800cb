"""DP-SGD as the app runs it: per-client accountant across rounds, budgets, checks at start."""

import csv
import itertools

import pytest
from opacus.accountants import RDPAccountant

from fl_app import keys
from fl_app.client_app import HonestClient
from fl_app.config import parse_run_config
from fl_app.errors import ConfigErrors
from fl_app.experiments.simulate import simulate
from fl_app.federation.checks import check_federation
from fl_app.federation.roles import wrap_byzantine
from fl_app.privacy import default_delta, sample_rate, steps_per_epoch
from fl_app.server_app import initial_weights

pytestmark = pytest.mark.usefixtures("shared_engine")  # one Ray for the module's runs

N = 10


def dp_cfg(**kw):
    return parse_run_config({"dp": True, "dp-noise-multiplier": 1.1, "dp-max-grad-norm": 1.0,
                             **kw})


def test_epsilon_is_cumulative_and_equals_one_accountant_over_all_steps():
    cfg = dp_cfg()
    client = HonestClient(cfg, 3, N)
    w = initial_weights(cfg)
    epsilons = []
    for rnd in range(1, 5):
        w, num_examples, metrics = client.fit(w, {keys.SERVER_ROUND: rnd})
        epsilons.append(metrics[keys.EPSILON])
    assert all(a < b for a, b in itertools.pairwise(epsilons))  # strictly grows
    reference = RDPAccountant()
    rate = sample_rate(num_examples, cfg.batch_size)
    for _ in range(4 * steps_per_epoch(num_examples, cfg.batch_size)):
        reference.step(noise_multiplier=1.1, sample_rate=rate)
    expected = reference.get_epsilon(delta=default_delta(num_examples))
    assert epsilons[-1] == pytest.approx(expected, rel=1e-12)
    # the state lives in the node's context.state, not in the client object
    fresh = HonestClient(cfg, 3, N, client.state)
    _, _, metrics = fresh.fit(w, {keys.SERVER_ROUND: 5})
    assert metrics[keys.EPSILON] > epsilons[-1]


def test_budget_stop_returns_no_examples_and_keeps_epsilon():
    cfg = dp_cfg(**{"dp-max-epsilon": 2.5})
    client = HonestClient(cfg, 0, N)
    w = initial_weights(cfg)
    seen = []
    for rnd in range(1, 6):
        _, n, metrics = client.fit(w, {keys.SERVER_ROUND: rnd})
        seen.append((n, metrics[keys.TRAINED], metrics[keys.EPSILON]))
    trained = [s for s in seen if s[1] == 1]
    refused = [s for s in seen if s[1] == 0]
    assert trained and refused and all(n == 0 for n, _, _ in refused)
    assert all(eps <= 2.5 for _, _, eps in seen)
    assert len({eps for _, _, eps in refused}) == 1  # a refusal spends nothing
    assert "dp-max-epsilon" in metrics[keys.STATUS]


def test_byzantine_clients_never_run_dp():
    cfg = dp_cfg(attack="ipm", **{"num-attackers": 2, "attack-knowledge": "own"})
    byz = wrap_byzantine(HonestClient(cfg, 0, N), cfg, 0, N)
    _, _, metrics = byz.fit(initial_weights(cfg), {keys.SERVER_ROUND: 1})
    assert metrics[keys.EPSILON] == -1.0 and metrics[keys.BYZANTINE]
    assert keys.DP_ACCOUNTANT_STATE not in byz.honest.state


@pytest.mark.parametrize("overrides, key", [
    ({"dp-target-epsilon": 0.05, "num-server-rounds": 50}, "dp-target-epsilon"),
    ({"dp-delta": 0.05}, "dp-delta"),  # >= 1 / N for 144-example partitions
])
def test_dp_parameters_no_client_can_use_are_refused_at_start(overrides, key):
    with pytest.raises(ConfigErrors) as info:
        check_federation(dp_cfg(**overrides), N, True)
    assert key in str(info.value)


def test_dp_with_krum_under_attack_runs_end_to_end(tmp_path):
    run = simulate({"dp": True, "dp-noise-multiplier": 0.8, "dp-max-grad-norm": 1.0,
                    "strategy": "krum", "num-byzantine": 1, "attack": "ipm",
                    "num-attackers": 2, "attack-knowledge": "colluders", "num-server-rounds": 3,
                    "fraction-fit": 1.0, "output-dir": str(tmp_path)}, num_supernodes=N)
    with open(run / "rounds.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    eps_max = [float(r["epsilon_max"]) for r in rows[1:]]
    assert eps_max == sorted(eps_max) and eps_max[0] > 0
    with open(run / "clients.csv") as f:
        clients = list(csv.DictReader(f))
    assert {c["epsilon"] for c in clients if c["byzantine"] == "1"} == {"-1.0"}
    assert all(float(c["epsilon"]) > 0 for c in clients if c["byzantine"] == "0")
