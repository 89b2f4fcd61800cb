"""Every robust rule and every pre-aggregation, end to end on the offline data, under attack."""

import csv

import pytest

from fl_app.experiments.simulate import simulate
from strategies.rules import preaggregation_names, rule_names

pytestmark = pytest.mark.usefixtures("shared_engine")  # one Ray for the module's runs

ATTACK = {"num-server-rounds": 2, "fraction-fit": 1.0, "attack": "sign-flip",
          "num-attackers": 2, "sign-flip-scale": 4.0, "attack-knowledge": "own",
          "num-byzantine": 2, "learning-rate": 0.1}
# (strategy, pre-aggregation, extra keys, nodes, what rounds.csv must show)
CASES = [
    ("median", "nnm", {}, 9, "selected_all"),
    ("trimmed-mean", "bucketing", {"bucketing-size": 2}, 9, "selected_all"),
    ("geometric-median", "clipping", {"clipping-max-norm": 1.0}, 9, "iterations"),
    ("bulyan", "arc", {}, 11, "selected_theta"),
    ("centered-clipping", "", {"centered-clipping-tau": 0.5, "server-momentum": 0.5}, 9,
     "clipped"),
    ("mda", "", {}, 9, "selected_n_minus_f"),
]


def test_the_cases_cover_every_rule_and_pre_aggregation():
    covered = {c[0] for c in CASES} | {"fedavg", "krum", "multikrum"}  # those: other tests
    assert covered == set(rule_names())
    assert {c[1] for c in CASES if c[1]} == set(preaggregation_names())


@pytest.mark.parametrize("strategy, pre, extra, nodes, shows", CASES, ids=[c[0] for c in CASES])
def test_a_robust_rule_learns_under_attack(tmp_path, strategy, pre, extra, nodes, shows):
    run = simulate({**ATTACK, "strategy": strategy, "pre-aggregation": pre, **extra,
                    "output-dir": str(tmp_path), "run-name": strategy}, num_supernodes=nodes)
    with open(run / "rounds.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["kept_global"] for r in rows[1:]] == ["False"] * 2, rows[-1]["note"]
    assert float(rows[-1]["test_accuracy"]) > float(rows[0]["test_accuracy"]) + 0.1
    attacked = rows[1:]
    assert all(len(r["byzantine_clients"].split(";")) == 2 for r in attacked)
    selected = [len(r["selected_clients"].split(";")) for r in attacked]
    if shows == "selected_all":
        assert selected == [nodes] * 2
    elif shows == "selected_theta":  # Bulyan chooses n - 2f, never a far sign-flipper
        assert selected == [nodes - 4] * 2
        assert all(int(r["num_selected_byzantine"]) == 0 for r in attacked)
    elif shows == "selected_n_minus_f":
        assert selected == [nodes - 2] * 2
    elif shows == "iterations":
        assert all(int(r["rule_iterations"]) >= 1 for r in attacked)
        assert all(int(r["num_clipped_byzantine"]) == 2 for r in attacked)  # clipping
    elif shows == "clipped":
        assert all(int(r["num_clipped_byzantine"]) == 2 for r in attacked)
    if pre == "arc":  # k = floor(2 f (n - f) / n) = 3 clipped, the two attackers among them
        assert all(len(r["clipped_clients"].split(";")) == 3 for r in attacked)
        assert all(int(r["num_clipped_byzantine"]) == 2 for r in attacked)


def test_fang_krum_makes_krum_select_an_attacker(tmp_path):
    # Fang et al. evaluate on non-IID data (their degree 0.5): updates then differ enough
    # for -lambda * s to sit among them; with IID digits they agree too well for that
    run = simulate({"num-server-rounds": 3, "fraction-fit": 1.0, "strategy": "krum",
                    "partitioning": "dirichlet", "dirichlet-alpha": 0.1,
                    "num-byzantine": 2, "attack": "fang-krum", "num-attackers": 2,
                    "attack-knowledge": "omniscient", "output-dir": str(tmp_path),
                    "run-name": "fang"}, num_supernodes=10)
    with open(run / "rounds.csv") as f:
        rows = list(csv.DictReader(f))[1:]
    assert sum(int(r["num_selected_byzantine"]) > 0 for r in rows) >= 2  # most attacked rounds


def test_a_defence_aware_attack_runs_on_the_clients(tmp_path):
    """opt-ipm on colluding clients evaluates the run's own defence (median after nnm)."""
    run = simulate({"num-server-rounds": 2, "fraction-fit": 1.0, "strategy": "median",
                    "pre-aggregation": "nnm", "num-byzantine": 2, "attack": "opt-ipm",
                    "num-attackers": 2, "attack-knowledge": "colluders",
                    "opt-ipm-evaluations": 5, "output-dir": str(tmp_path), "run-name": "opt"},
                   num_supernodes=9)
    with open(run / "rounds.csv") as f:
        rows = list(csv.DictReader(f))[1:]
    assert [len(r["byzantine_clients"].split(";")) for r in rows] == [2, 2]
    assert all(r["kept_global"] == "False" and not r["failed_clients"] for r in rows)


def test_a_backdoor_with_model_replacement_takes_over_fedavg(tmp_path):
    """One attacker of ten, from round 5 of 6: the trigger works, clean accuracy holds."""
    run = simulate({"num-server-rounds": 6, "fraction-fit": 1.0, "local-epochs": 2,
                    "attack": "backdoor", "num-attackers": 1, "attack-start-round": 5,
                    "backdoor-fraction": 0.2, "learning-rate": 0.1,
                    "output-dir": str(tmp_path), "run-name": "backdoor"}, num_supernodes=10)
    with open(run / "rounds.csv") as f:
        rows = list(csv.DictReader(f))
    before = [float(r["backdoor_accuracy"]) for r in rows[:5]]
    assert max(before) < 0.1  # a clean model rarely calls a triggered image the target
    assert float(rows[-1]["backdoor_accuracy"]) > 0.7
    assert float(rows[-1]["test_accuracy"]) > float(rows[4]["test_accuracy"]) - 0.1
