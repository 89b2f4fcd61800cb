"""Reading result folders: a run's files and a sweep's cells (the names of the report files too)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fl_app.config import DECLARED, stored_config
from fl_app.config.methods import ATTACK
from fl_app.runs import layout
from fl_app.runs.layout import read_summary

MANIFEST = "sweep.json"
SWEEP_CSV = "sweep.csv"
PLOT_ACCURACY_PER_ROUND = "accuracy_per_round.png"
PLOT_ACCURACY_VS_ATTACKERS = "accuracy_vs_attackers.png"
PLOT_ACCURACY_VS_DP_EPSILON = "accuracy_vs_dp_epsilon.png"
METRIC_COLUMNS = ("final_test_accuracy", "best_test_accuracy", "byzantine_selection_rate",
                  "final_epsilon_max", "seconds")
# The attack's own keys, and those its declared parameters add (ipm-epsilon, ...)
ATTACK_KEYS = ("attack", "attack-knowledge", "attack-start-round",
               *(key for key, d in DECLARED.items() if d.role == ATTACK))
DP_KEYS = ("dp", "dp-noise-multiplier", "dp-target-epsilon", "dp-max-grad-norm", "dp-delta",
           "dp-accountant", "dp-max-epsilon", "dp-grad-sample-mode")
AXIS_LABELS = {"num-attackers": "number of attackers q", "num-byzantine": "declared f",
               "dirichlet-alpha": "Dirichlet alpha",
               **{key: d.param.axis_label for key, d in DECLARED.items()}}
DPI = 150

def plot_accuracy_vs(key: str) -> str:
    """The file of final accuracy against a declared parameter ``key`` (when it varies).

    >>> plot_accuracy_vs("ipm-epsilon")
    'accuracy_vs_ipm_epsilon.png'
    """
    return f"accuracy_vs_{key.replace('-', '_')}.png"


def format_value(value: Any) -> str:
    """A config value as the reports print it (booleans as TOML writes them)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings (``[]`` when the file is missing)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def ids(cell: str) -> list[int]:
    """Client ids of one CSV cell (``3;17;42``), ignoring unknown ones (``?``).

    >>> ids("3;17;?"), ids("")
    ([3, 17], [])
    """
    return [int(v) for v in cell.split(";") if v.strip().lstrip("-").isdigit()]


def number(value: Any) -> float | None:
    """A CSV value as a float; ``None`` for empty or non-numeric values."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class CellResult:
    """One finished run, as read from its folder.

    Attributes:
        name: The folder's name (a sweep cell's name).
        path: The folder.
        summary: ``summary.json``; ``summary["config"]`` is the resolved run config.
        rounds: ``rounds.csv`` rows (strings).
    """

    name: str
    path: Path
    summary: dict[str, Any]
    rounds: list[dict[str, str]]

    @property
    def config(self) -> dict[str, Any]:
        """The resolved run configuration (run-config keys).

        Read as :func:`fl_app.runs.layout.config_differences` reads it: a key added
        to the app since reads as its default, a renamed key under its new name.
        """
        return stored_config(self.summary.get("config", {}))

    @property
    def accuracies(self) -> list[float]:
        """Test accuracy per round (round 0 first)."""
        return [float(r["test_accuracy"]) for r in self.rounds]

    @property
    def final_accuracy(self) -> float:
        """Test accuracy after the last round."""
        return self.accuracies[-1]

    @property
    def best_accuracy(self) -> float:
        """Best test accuracy over the rounds."""
        return max(self.accuracies)


def load_run(path: str | Path) -> CellResult:
    """Read one run folder (``summary.json`` and ``rounds.csv``)."""
    path = Path(path)
    return CellResult(path.name, path, read_summary(path), read_csv(path / layout.ROUNDS))


def read_manifest(out: Path) -> dict[str, Any]:
    """The sweep's ``sweep.json`` (``{}`` when there is none)."""
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def load_cells(out: str | Path) -> tuple[list[CellResult], list[str]]:
    """The finished cells under a sweep folder, and the names of unfinished ones.

    Cells named in ``sweep.json`` come first, in its order; other finished run
    folders follow by name.
    """
    out = Path(out)
    order = [c["name"] for c in read_manifest(out).get("cells", [])]
    folders = sorted(p for p in out.iterdir() if (p / layout.SUMMARY).is_file()) \
        if out.is_dir() else []
    folders.sort(key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name))
    finished, unfinished = [], []
    for folder in folders:
        try:
            cell = load_run(folder)
        except (OSError, ValueError):
            unfinished.append(folder.name)
            continue
        if cell.summary.get("status") == "finished" and cell.rounds:
            finished.append(cell)
        else:
            unfinished.append(folder.name)
    return finished, unfinished
