"""The one-run audit end to end: canaries, their scores, the bound against the accounted epsilon."""

import json

import numpy as np
import pytest

from fl_app import keys
from fl_app.audit.canaries import canary_scores, run_canaries
from fl_app.audit.canary_audit import guess_counts
from fl_app.audit.one_run import audit_bound
from fl_app.client_app import HonestClient
from fl_app.config import parse_run_config
from fl_app.errors import ConfigErrors
from fl_app.federation.checks import check_federation
from fl_app.federation.roles import build_run_model
from fl_app.learning.data import load_partition, load_test_set
from fl_app.server_app import initial_weights
from fl_app.task import set_weights

M = 300
# the settings that let an unprotected model memorise its mislabelled canaries
MEMORISE = {"local-epochs": 10, "learning-rate": 0.1, "num-server-rounds": 10}


def test_the_canary_plan_is_seeded_balanced_wrong_and_held_by_honest_clients_only():
    cfg = parse_run_config({"audit-canaries": M, "attack": "ipm", "num-attackers": 2})
    plan = run_canaries(cfg, 10)
    assert plan is run_canaries(parse_run_config(cfg.as_dict()), 10)  # the same draw
    _, y_test = load_test_set(cfg.data)
    assert len(set(plan.rows)) == M and np.all(plan.labels != y_test.numpy()[plan.rows])
    assert 0.4 < plan.included.mean() < 0.6
    byzantine = set(range(10)) - set(plan.owners.tolist())
    assert len(byzantine) == 2  # the two Byzantine partitions hold none
    other = run_canaries(parse_run_config({**cfg.as_dict(), "seed": 1}), 10)
    assert not np.array_equal(other.included, plan.included)
    owner = int(plan.owners[0])
    x, y = HonestClient(cfg, owner, 10).data()
    base_x, _ = load_partition(cfg.data, owner, 10)
    assert len(y) == len(base_x) + len(plan.of_partition(owner))
    assert HonestClient(cfg, owner, 10).data()[0] is x  # built once per process, not per call
    assert len(HonestClient(cfg, owner, 10).data("test")[1]) < len(y_test)  # test: no canary


def test_more_canaries_than_test_images_are_refused_at_start():
    with pytest.raises(ConfigErrors, match="'audit-canaries'"):
        check_federation(parse_run_config({"audit-canaries": 10_000}), 10, True)


@pytest.mark.usefixtures("shared_engine")
def test_without_dp_fl_audit_canaries_finds_a_clearly_positive_lower_bound(tmp_path, capsys):
    from fl_app.audit.cli import main

    argv = ["canaries", "--num-supernodes", "10", "--canaries", str(M), "--out", str(tmp_path),
            "--set", *[f"{k}={v}" for k, v in MEMORISE.items()], "fraction-fit=1.0"]
    assert main(argv) == 0
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["epsilon_accounted"] is None and audit["m"] == M
    assert audit["epsilon_lower_bound"] > 1.0  # measured 1.67: the model memorised them
    assert audit["correct"] <= audit["guesses"] and (tmp_path / "canary_scores.png").is_file()
    assert "epsilon >=" in capsys.readouterr().out


def federate(cfg, num_clients):
    """FedAvg over every client in this process (so a test can break the noise)."""
    weights = initial_weights(cfg)
    clients = [HonestClient(cfg, p, num_clients) for p in range(num_clients)]
    for rnd in range(1, cfg.num_server_rounds + 1):
        results = [c.fit(weights, {keys.SERVER_ROUND: rnd}) for c in clients]
        total = sum(n for _, n, _ in results)
        weights = [sum(w[i] * n for w, n, _ in results) / total for i in range(len(weights))]
    model = build_run_model(cfg)
    set_weights(model, weights)
    return model, max(m[keys.EPSILON] for _, _, m in results)


@pytest.mark.parametrize("broken", [False, True])
def test_the_bound_stays_below_the_accounted_epsilon_unless_the_noise_is_broken(broken,
                                                                                monkeypatch):
    """The audit as a bug detector: DP-SGD noise 1000 times smaller than accounted is caught."""
    if broken:
        import fl_app.privacy.training as training

        real = training.StepContext

        def weak_noise(**kwargs):
            return real(**{**kwargs, "noise_multiplier": kwargs["noise_multiplier"] / 1000})

        monkeypatch.setattr(training, "StepContext", weak_noise)
    cfg = parse_run_config({"dp": True, "dp-noise-multiplier": 10.0, "dp-max-grad-norm": 10.0,
                            "dp-delta": 1e-5, "audit-canaries": M, "batch-size": 16,
                            **MEMORISE, "num-server-rounds": 6})
    model, accounted = federate(cfg, 5)
    plan = run_canaries(cfg, 5)
    bound = audit_bound(canary_scores(model, plan, cfg.data), plan.included, 1e-5,
                        guess_counts(M)).epsilon_lower_bound
    if broken:
        assert bound > accounted  # measured 2.26 against 0.94 at 10 rounds
    else:
        assert bound <= accounted
