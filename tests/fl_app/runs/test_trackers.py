"""Trackers: what a run logs to TensorBoard and MLflow, read back from their own stores."""

from __future__ import annotations

import csv

import pytest

from fl_app.config import parse_run_config
from fl_app.experiments.simulate import simulate
from fl_app.experiments.sweep import run_sweep
from fl_app.federation.checks import federation_errors
from fl_app.runs import trackers
from fl_app.runs.trackers.mlflow_tracker import store_uri

pytestmark = [pytest.mark.usefixtures("shared_engine"),
              pytest.mark.filterwarnings("ignore::UserWarning")]
DP = {"num-server-rounds": 2, "fraction-fit": 1.0, "dp": True, "dp-noise-multiplier": 1.0}


def rows_of(run_dir, name):
    with open(run_dir / name) as f:
        return list(csv.DictReader(f))


def test_tensorboard_gets_every_round_metric_and_each_clients_epsilon(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = simulate({**DP, "tracker": "tensorboard", "output-dir": str(tmp_path),
                    "run-name": "tb"}, num_supernodes=3)
    events = EventAccumulator(str(run / "tensorboard" / "tb"), size_guidance={"tensors": 0})
    events.Reload()
    rounds = rows_of(run, "rounds.csv")
    accuracy = [(e.step, e.value) for e in events.Scalars("test_accuracy")]
    assert accuracy == [(int(r["round"]), pytest.approx(float(r["test_accuracy"]), abs=1e-6))
                        for r in rounds]
    for c in rows_of(run, "clients.csv"):
        logged = {e.step: e.value for e in events.Scalars(f"epsilon/{c['partition']}")}
        assert logged[int(c["round"])] == pytest.approx(float(c["epsilon"]), rel=1e-6)
    assert {"config/text_summary", "status/text_summary"} <= set(events.Tags()["tensors"])


def test_mlflow_gets_the_config_every_round_and_the_end_and_a_sweep_is_one_experiment(
        tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "sweep"
    run_sweep(out, {"strategy": ["fedavg", "median"]},
              {**DP, "num-server-rounds": 1, "tracker": "mlflow"}, num_supernodes=3)
    client = MlflowClient(store_uri(out / "tracking"))
    experiment = client.get_experiment_by_name("sweep")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["strategy=fedavg", "strategy=median"]
    for r in runs:
        assert r.info.status == "FINISHED" and r.data.params["strategy"] in r.info.run_name
        rounds = rows_of(out / r.info.run_name, "rounds.csv")
        history = client.get_metric_history(r.info.run_id, "test_accuracy")
        assert [(m.step, m.value) for m in history] == [
            (int(row["round"]), pytest.approx(float(row["test_accuracy"]))) for row in rounds]
        epsilons = {k for k in r.data.metrics if k.startswith("epsilon/")}
        assert epsilons == {"epsilon/0", "epsilon/1", "epsilon/2"}


def test_a_tracker_whose_package_is_missing_fails_at_start_naming_tracker(monkeypatch):
    monkeypatch.setitem(trackers.TRACKERS, "mlflow", ("no_such_package_here", None))
    (error,) = federation_errors(parse_run_config({"tracker": "mlflow"}), 4, simulated=True)
    assert error.key == "tracker" and "no_such_package_here" in str(error)
