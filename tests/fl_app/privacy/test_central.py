"""Central DP (dp-level='central'): Flower's server-side clipping, its checks, its accounting."""

import csv

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant

from fl_app.config import parse_run_config
from fl_app.errors import ConfigErrors
from fl_app.experiments.simulate import simulate
from fl_app.privacy import default_delta
from fl_app.server_app import initial_weights
from strategies.updates import flatten

CENTRAL = {"dp": True, "dp-level": "central"}


@pytest.mark.parametrize(("overrides", "key"), [
    ({"strategy": "krum", "num-byzantine": 1}, "strategy"),
    ({"strategy": "median"}, "strategy"),
    ({"pre-aggregation": "bucketing"}, "pre-aggregation"),
    ({"server-momentum": 0.9}, "server-momentum"),
    ({"server-learning-rate": 2.0}, "server-learning-rate"),
    ({"max-update-norm": 0.5, "dp-clipping-norm": 1.0}, "max-update-norm"),
    ({"dp-max-epsilon": 3.0}, "dp-max-epsilon"),
    ({"attack": "ipm", "num-attackers": 1, "attack-knowledge": "omniscient"}, "attack-knowledge"),
])
def test_central_dp_is_refused_at_start_with_what_breaks_its_guarantee(overrides, key):
    with pytest.raises(ConfigErrors) as info:
        parse_run_config({**CENTRAL, **overrides})
    message = str(info.value)
    assert repr(key) in message and "dp-level='central'" in message


@pytest.mark.usefixtures("shared_engine")
def test_a_central_run_accounts_one_sampled_gaussian_a_round_and_survives_a_bad_client(tmp_path):
    run = simulate({**CENTRAL, "dp-noise-multiplier": 1.5, "dp-clipping-norm": 0.5,
                    "num-server-rounds": 3, "fraction-fit": 0.5, "attack": "wrong-shape",
                    "num-attackers": 1, "output-dir": str(tmp_path)}, num_supernodes=6)
    with open(run / "rounds.csv") as f:
        rows = list(csv.DictReader(f))[1:]
    reference = RDPAccountant()
    for row in rows:  # q = 3 sampled of 6 clients, delta = 1 / (10 K)
        reference.step(noise_multiplier=1.5, sample_rate=0.5)
        assert float(row["epsilon_max"]) == pytest.approx(
            reference.get_epsilon(delta=default_delta(6)), rel=1e-5)
    assert any(r["rejected_clients"] for r in rows)  # the wrong-shape update, not a crash
    with open(run / "clients.csv") as f:
        clients = list(csv.DictReader(f))
    honest = [c for c in clients if c["byzantine"] == "0"]
    assert honest and all(c["examples"] == "1" for c in honest)  # equal weights


@pytest.mark.usefixtures("shared_engine")
def test_the_noise_on_the_average_has_std_sigma_s_over_m(tmp_path):
    """One round, S tiny and sigma large: the model moves by the noise alone, N(0, (sS/m)^2)."""
    config = {**CENTRAL, "dp-noise-multiplier": 40.0, "dp-clipping-norm": 0.01,
              "num-server-rounds": 1, "fraction-fit": 1.0, "output-dir": str(tmp_path)}
    run = simulate(config, num_supernodes=4)
    final = torch.load(run / "model.pt", weights_only=True)
    moved = flatten([w.numpy() for w in final]) - flatten(initial_weights(
        parse_run_config(config)))
    assert float(np.std(moved)) == pytest.approx(40.0 * 0.01 / 4, rel=0.05)


def test_the_central_noise_is_seeded_by_seed_and_round_or_keyed_by_the_os(monkeypatch):
    from fl_app.privacy import randomness

    def draw(source, seed, server_round):
        return randomness.central_noise_generator(source, seed, server_round).normal(size=4)

    assert np.array_equal(draw("seeded", 7, 2), draw("seeded", 7, 2))
    assert not np.array_equal(draw("seeded", 7, 2), draw("seeded", 7, 3))
    assert not np.array_equal(draw("seeded", 7, 2), draw("seeded", 8, 2))
    assert not np.array_equal(draw("os", 7, 2), draw("os", 7, 2))  # fresh every round
    monkeypatch.setattr(randomness, "os_entropy", lambda n: b"\x01" * n)
    assert np.array_equal(draw("os", 7, 2), draw("os", 9, 5))  # the OS bytes alone


@pytest.mark.usefixtures("shared_engine")
def test_a_seeded_central_run_reproduces_bit_for_bit_and_an_os_keyed_one_does_not(tmp_path):
    def final_model(source, name):
        run = simulate({**CENTRAL, "dp-noise-source": source, "num-server-rounds": 1,
                        "fraction-fit": 1.0, "output-dir": str(tmp_path), "run-name": name},
                       num_supernodes=3)
        return flatten([w.numpy() for w in torch.load(run / "model.pt", weights_only=True)])

    assert np.array_equal(final_model("auto", "a"), final_model("auto", "b"))
    assert not np.array_equal(final_model("os", "c"), final_model("auto", "a"))
