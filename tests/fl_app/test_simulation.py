"""End-to-end simulations through Flower's Simulation Engine (in-process, Ray)."""

import csv
import json

import pytest
import torch

from fl_app.config import parse_run_config
from fl_app.errors import ConfigErrors
from fl_app.experiments.simulate import simulate
from fl_app.learning.models import build_model
from fl_app.runs.recorder import ROUND_COLUMNS
from fl_app.task import set_weights

pytestmark = pytest.mark.usefixtures("shared_engine")  # one Ray for the module's runs


def rounds(run_dir):
    with open(run_dir / "rounds.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return simulate({"num-server-rounds": 6, "fraction-fit": 1.0, "output-dir": str(out),
                     "run-name": "clean"}, num_supernodes=10)


def test_offline_default_learns_and_writes_a_complete_result_folder(clean_run):
    files = {p.name for p in clean_run.iterdir()}
    assert {"summary.json", "rounds.csv", "clients.csv", "model.pt", "accuracy.png"} <= files
    rows = rounds(clean_run)
    assert [int(r["round"]) for r in rows] == list(range(7))
    assert tuple(rows[0]) == ROUND_COLUMNS
    assert float(rows[-1]["test_accuracy"]) > 0.6  # chance is 0.1
    assert all(int(r["num_clients"]) == 10 for r in rows[1:])
    summary = json.loads((clean_run / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["config"]["num-server-rounds"] == 6
    assert summary["final"]["final_test_accuracy"] == float(rows[-1]["test_accuracy"])
    assert summary["versions"]["flwr"] == "1.42.0"
    # model.pt is the final global model: it reproduces the recorded accuracy
    from fl_app.learning.data import DataConfig, load_test_set
    from fl_app.task import evaluate

    model = build_model("digits-cnn")
    set_weights(model, [t.numpy() for t in torch.load(clean_run / "model.pt")])
    _, acc = evaluate(model, *load_test_set(DataConfig()))
    assert acc == pytest.approx(float(rows[-1]["test_accuracy"]), abs=1e-6)


def test_ipm_breaks_krum_selection_but_not_fedavg(tmp_path):
    """Xie et al.: with small epsilon Krum picks the attackers; FedAvg barely notices.

    The attack's premise is that honest updates vary more than their mean is long
    (||mean||^2 < variance); label-skewed (Dirichlet) partitions make that so here.
    """
    base = {"num-server-rounds": 6, "fraction-fit": 1.0, "output-dir": str(tmp_path),
            "partitioning": "dirichlet", "dirichlet-alpha": 0.3}
    attack = {**base, "attack": "ipm", "ipm-epsilon": 0.1, "num-attackers": 4,
              "attack-knowledge": "omniscient", "attack-start-round": 2}
    krum = simulate({**attack, "strategy": "krum", "num-byzantine": 3, "run-name": "krum"},
                    num_supernodes=10)
    fedavg = simulate({**attack, "run-name": "fedavg"}, num_supernodes=10)
    clean = simulate({**base, "run-name": "clean"}, num_supernodes=10)
    attacked = [r for r in rounds(krum) if int(r["round"]) >= 2]
    assert all(len(r["byzantine_clients"].split(";")) == 4 for r in attacked)
    assert all(r["byzantine_clients"] == "" for r in rounds(krum)[1:2])
    chosen_attacker = [int(r["num_selected_byzantine"]) == 1 for r in attacked]
    assert sum(chosen_attacker) >= 0.8 * len(attacked)
    clean_acc = float(rounds(clean)[-1]["test_accuracy"])
    assert float(rounds(fedavg)[-1]["test_accuracy"]) > clean_acc - 0.15
    assert (krum / "krum_scores.csv").exists()
    summary = json.loads((krum / "summary.json").read_text())
    assert summary["simulation"] is True and summary["num_nodes"] == 10
    assert "drawn anew each round" in summary["byzantine_partitions"]
    assert len(summary["byzantine_partitions_seen"]) >= 4


@pytest.mark.parametrize(("attack", "column", "why"), [
    ("nan", "rejected_clients", "NaN or Inf"),
    ("wrong-shape", "rejected_clients", "1 arrays instead of 6"),
    ("crash", "failed_clients", ""),
])
def test_faulty_clients_are_named_and_never_reach_the_model(tmp_path, attack, column, why):
    """Two of six clients send NaN, wrong shapes or raise from round 2; the run goes on."""
    run = simulate({"num-server-rounds": 3, "fraction-fit": 1.0, "attack": attack,
                    "num-attackers": 2, "attack-start-round": 2, "output-dir": str(tmp_path)},
                   num_supernodes=6)
    rows = rounds(run)
    byzantine = sorted(json.loads((run / "summary.json").read_text())["byzantine_partitions"])
    assert rows[1]["num_failures"] == "0" and rows[1][column] == ""
    for row in rows[2:]:
        assert int(row["num_failures"]) == 2 and row["kept_global"] == "False"
        named = [entry.split(":")[0] for entry in row[column].split(";")]
        assert sorted(int(p) for p in named) == byzantine
        assert why in row[column]
        assert int(row["num_clients"]) == 4  # the honest ones, aggregated
    assert float(rows[-1]["test_accuracy"]) > float(rows[1]["test_accuracy"])
    weights = torch.load(run / "model.pt")
    assert all(torch.isfinite(w).all() for w in weights)


def test_more_failures_than_accept_failures_keep_the_global_model(tmp_path):
    run = simulate({"num-server-rounds": 2, "fraction-fit": 1.0, "attack": "crash",
                    "num-attackers": 2, "attack-start-round": 2, "accept-failures": 1,
                    "output-dir": str(tmp_path)}, num_supernodes=6)
    first, second = rounds(run)[1:]
    assert first["kept_global"] == "False"
    assert second["kept_global"] == "True" and "accept-failures" in second["note"]
    assert second["test_accuracy"] == first["test_accuracy"]  # the model did not move


def test_real_cifar10_from_data_dir_improves_on_the_untrained_model(cifar_dir, tmp_path):
    # 5 clients of 1,000 real images a round (the seed's CNN and batch 10)
    run = simulate({"dataset": "cifar10", "data-dir": str(cifar_dir), "num-server-rounds": 2,
                    "fraction-fit": 0.1, "learning-rate": 0.05, "output-dir": str(tmp_path)},
                   num_supernodes=50)
    rows = rounds(run)
    assert float(rows[-1]["test_accuracy"]) > float(rows[0]["test_accuracy"]) + 0.05
    assert float(rows[-1]["test_loss"]) < float(rows[0]["test_loss"])
    assert json.loads((run / "summary.json").read_text())["config"]["model"] == "auto"


def test_bad_config_fails_before_the_simulation_starts(tmp_path):
    with pytest.raises(ConfigErrors, match="'dataset'"):
        simulate({"dataset": "imagenet", "output-dir": str(tmp_path)})
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigErrors):
        parse_run_config({"data-dir": "/nonexistent", "dataset": "cifar10"})


def test_a_run_that_fails_after_start_says_so_in_summary_json(tmp_path):
    """Flower's ``flwr run`` exits 0 whatever happens; the app's own status says failed."""
    with pytest.raises(ConfigErrors, match="num-attackers"):
        simulate({"num-server-rounds": 2, "attack": "ipm", "num-attackers": 4,
                  "output-dir": str(tmp_path), "run-name": "too-many-attackers"},
                 num_supernodes=3)  # 4 attackers among 3 nodes: refused when nodes are known
    summary = json.loads((tmp_path / "too-many-attackers" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"].startswith("ConfigErrors:")
    assert "'num-attackers' = 4" in summary["error"]
    with open(tmp_path / "too-many-attackers" / "rounds.csv") as f:
        assert [row["round"] for row in csv.DictReader(f)] == ["0"]  # kept, not lost
