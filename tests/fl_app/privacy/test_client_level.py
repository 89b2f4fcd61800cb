"""Client-level DP (dp-level='client'): the mechanism, its accounting, its checks, a real run."""

import csv
import math

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from fl_app import keys
from fl_app.client_app import HonestClient
from fl_app.config import parse_run_config
from fl_app.errors import ConfigErrors
from fl_app.experiments.simulate import simulate
from fl_app.federation.checks import check_federation
from fl_app.privacy import default_delta
from fl_app.privacy.levels.client import clip_and_noise
from fl_app.server_app import initial_weights
from strategies.updates import flatten

N = 10
# Opacus' RDP orders (DEFAULT_ALPHAS), written out: the closed form below is independent
ORDERS = np.array([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)), dtype=float)


def gaussian_rdp_epsilon(sigma, rounds, delta):
    """T Gaussian mechanisms: RDP T alpha / (2 sigma^2), converted as Balle et al. (2020)."""
    rdp = rounds * ORDERS / (2 * sigma**2)
    return float(np.min(rdp + np.log1p(-1 / ORDERS) - (np.log(delta) + np.log(ORDERS))
                        / (ORDERS - 1)))


def exact_gaussian_epsilon(sigma, rounds, delta):
    """The tight epsilon of T Gaussian mechanisms (mu = sqrt(T) / sigma, Dong et al. 2022)."""
    mu = math.sqrt(rounds) / sigma

    def excess(eps):
        return (stats.norm.cdf(-eps / mu + mu / 2)
                - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2) - delta)

    return optimize.brentq(excess, 0.0, 100.0)


def client_cfg(**kw):
    return parse_run_config({"dp": True, "dp-level": "client", "dp-noise-multiplier": 1.5,
                             "dp-clipping-norm": 0.5, **kw})


def test_the_update_is_clipped_to_s_and_noised_with_std_sigma_s():
    g = torch.Generator().manual_seed(0)
    long = torch.full((100,), 1.0)  # norm 10
    np.testing.assert_allclose(torch.linalg.vector_norm(clip_and_noise(long, 2.0, 0.0, g)), 2.0,
                               rtol=1e-6)
    short = torch.full((100,), 0.01)  # norm 0.1: left as it is
    assert torch.equal(clip_and_noise(short, 2.0, 0.0, g), short)
    noise = clip_and_noise(torch.zeros(200_000), 2.0, 0.75, g)  # std sigma * S = 1.5
    assert float(noise.std()) == pytest.approx(1.5, rel=0.01)
    assert abs(float(noise.mean())) < 0.01


def test_client_epsilon_equals_an_independent_accountant_for_the_gaussian_mechanism():
    cfg = client_cfg()
    client = HonestClient(cfg, 2, N)
    w = initial_weights(cfg)
    delta = default_delta(N)  # the unit is the client: 1 / (10 K)
    for rnd in range(1, 4):
        sent, _, metrics = client.fit(w, {keys.SERVER_ROUND: rnd})
        assert metrics[keys.EPSILON] == pytest.approx(gaussian_rdp_epsilon(1.5, rnd, delta),
                                                      rel=1e-9)
        # RDP is an upper bound on the tight epsilon, and not far above it
        exact = exact_gaussian_epsilon(1.5, rnd, delta)
        assert exact <= metrics[keys.EPSILON] <= 1.5 * exact
    # what leaves the client is the global model plus a clipped update plus N(0, (sigma S)^2)
    update = flatten(sent) - flatten(w)
    assert float(np.std(update)) == pytest.approx(1.5 * 0.5, rel=0.05)


def test_a_target_epsilon_is_reached_after_the_planned_rounds():
    cfg = client_cfg(**{"dp-target-epsilon": 4.0, "num-server-rounds": 3})
    client = HonestClient(cfg, 0, N)
    w = initial_weights(cfg)
    for rnd in range(1, 4):
        _, _, metrics = client.fit(w, {keys.SERVER_ROUND: rnd})
    assert 3.99 - 0.01 <= metrics[keys.EPSILON] <= 4.0


def test_the_budget_stops_a_client_before_it_passes_it():
    budget = gaussian_rdp_epsilon(1.5, 2, default_delta(N)) + 1e-6  # room for two rounds
    cfg = client_cfg(**{"dp-max-epsilon": budget})
    client = HonestClient(cfg, 0, N)
    w = initial_weights(cfg)
    seen = [client.fit(w, {keys.SERVER_ROUND: r})[1:] for r in range(1, 5)]
    assert [n > 0 for n, _ in seen] == [True, True, False, False]
    assert "dp-max-epsilon" in seen[-1][1][keys.STATUS]


@pytest.mark.parametrize(("overrides", "key"), [
    ({"dp-delta": 0.2}, "dp-delta"),  # >= 1 / K for K = 10 clients
    ({"dp-target-epsilon": 0.01, "num-server-rounds": 50}, "dp-target-epsilon"),
    ({"dp-level": "everything"}, "dp-level"), ({"dp-clipping-norm": 0.0}, "dp-clipping-norm"),
])
def test_client_level_settings_no_client_can_use_are_refused_at_start(overrides, key):
    with pytest.raises(ConfigErrors) as info:
        check_federation(client_cfg(**overrides), N, True)
    assert repr(key) in str(info.value)


@pytest.mark.usefixtures("shared_engine")
def test_a_client_level_run_accounts_every_round_each_client_took_part_in(tmp_path):
    run = simulate({"dp": True, "dp-level": "client", "dp-noise-multiplier": 2.0,
                    "dp-clipping-norm": 0.5, "num-server-rounds": 3, "fraction-fit": 0.5,
                    "output-dir": str(tmp_path)}, num_supernodes=6)
    with open(run / "clients.csv") as f:
        clients = list(csv.DictReader(f))
    taken = {}
    for row in clients:  # each client's epsilon counts the rounds it has trained in so far
        taken[row["partition"]] = taken.get(row["partition"], 0) + 1
        assert float(row["epsilon"]) == pytest.approx(
            gaussian_rdp_epsilon(2.0, taken[row["partition"]], default_delta(6)), rel=1e-9)
    assert max(taken.values()) >= 2 and {r["noise_source"] for r in clients} == {"seeded"}
