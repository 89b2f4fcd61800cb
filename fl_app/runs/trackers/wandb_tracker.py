"""``tracker = 'wandb'``: Weights & Biases in offline mode (``wandb sync`` uploads later).

The run config is the W&B config, every numeric ``rounds.csv`` column and each client's
epsilon (``epsilon/<partition>``) a logged value at step = round; files under
``<tracker-dir>/wandb/``; the project is ``tracker-experiment``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fl_app.runs.trackers import client_epsilons, numeric, register_tracker


class WandbTracker:
    """One offline W&B run."""

    def __init__(self, config: Mapping[str, Any], log_dir: Path, experiment: str,
                 run_name: str) -> None:
        import wandb

        log_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=experiment, name=run_name, config=dict(config),
                              dir=str(log_dir), mode="offline", reinit="create_new")

    def log_round(self, row: Mapping[str, Any], clients: Sequence[Mapping[str, Any]]) -> None:
        """The round's values, at step = round."""
        values = {k: v for k, v in {**numeric(row), **client_epsilons(clients)}.items()
                  if k != "round"}
        self.run.log(values, step=int(row["round"]))

    def close(self, status: str) -> None:
        """Finish the run (exit code 1 unless it finished)."""
        self.run.finish(exit_code=0 if status == "finished" else 1)


register_tracker("wandb", "wandb", WandbTracker)
