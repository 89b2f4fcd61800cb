"""``tracker = 'mlflow'``: an MLflow run in a local SQLite store.

MLflow 3 puts its file store in maintenance mode (it refuses ``./mlruns`` unless told
otherwise), so the store is ``sqlite:///<tracker-dir>/mlflow.db``: one database per
folder, read with ``mlflow ui --backend-store-uri sqlite:///<tracker-dir>/mlflow.db`` or
``mlflow.tracking.MlflowClient``. The experiment is ``tracker-experiment``; the run
config goes in as parameters, every numeric ``rounds.csv`` column as a metric at step =
round, each client's epsilon as ``epsilon/<partition>``; the run ends FINISHED or FAILED.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fl_app.runs.trackers import client_epsilons, numeric, register_tracker

MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter value


def store_uri(log_dir: Path) -> str:
    """The tracking URI of ``log_dir``'s store."""
    return f"sqlite:///{(log_dir / 'mlflow.db').resolve()}"


class MLflowTracker:
    """One MLflow run, through the client API (no global active run)."""

    def __init__(self, config: Mapping[str, Any], log_dir: Path, experiment: str,
                 run_name: str) -> None:
        from mlflow.tracking import MlflowClient

        log_dir.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(store_uri(log_dir))
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = (found.experiment_id if found is not None
                         else self.client.create_experiment(experiment))
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        for key, value in config.items():
            self.client.log_param(self.run_id, key, str(value)[:MAX_PARAM_CHARS])

    def log_round(self, row: Mapping[str, Any], clients: Sequence[Mapping[str, Any]]) -> None:
        """Metrics of the round, at step = round."""
        from mlflow.entities import Metric

        step = int(row["round"])
        values = {**numeric(row), **client_epsilons(clients)}
        self.client.log_batch(self.run_id, metrics=[
            Metric(key, value, 0, step) for key, value in values.items() if key != "round"])

    def close(self, status: str) -> None:
        """End the MLflow run: FINISHED, or FAILED / KILLED."""
        state = {"finished": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self.run_id, state)


register_tracker("mlflow", "mlflow", MLflowTracker)
