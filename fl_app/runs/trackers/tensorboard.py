"""``tracker = 'tensorboard'``: event files through ``torch.utils.tensorboard``.

The run config goes in as text (``config``, one ``key = value`` line each), every numeric
``rounds.csv`` column as a scalar at step = round, and each client's epsilon as
``epsilon/<partition>``. Files: ``<tracker-dir>/tensorboard/<run name>/``, so a sweep's
cells are sibling folders of one parent (``tensorboard --logdir <tracker-dir>/tensorboard``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fl_app.runs.trackers import client_epsilons, numeric, register_tracker


class TensorBoardTracker:
    """A ``SummaryWriter`` per run."""

    def __init__(self, config: Mapping[str, Any], log_dir: Path, experiment: str,
                 run_name: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir / "tensorboard" / run_name))
        self.writer.add_text("config", "\n\n".join(f"{k} = {v!r}" for k, v in config.items()))

    def log_round(self, row: Mapping[str, Any], clients: Sequence[Mapping[str, Any]]) -> None:
        """Scalars of the round, at step = round."""
        step = int(row["round"])
        for key, value in {**numeric(row), **client_epsilons(clients)}.items():
            if key != "round":
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self, status: str) -> None:
        """Record the status and close the event file."""
        self.writer.add_text("status", status)
        self.writer.close()


register_tracker("tensorboard", "tensorboard", TensorBoardTracker)
