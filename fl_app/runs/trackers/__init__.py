"""Experiment trackers (``tracker``): a run's config and metrics, logged as it goes.

``none`` (default), ``tensorboard``, ``mlflow`` or ``wandb``, one file each, registered
by name. The ServerApp's recorder (:class:`fl_app.runs.recorder.RunRecorder`) hands a
tracker the resolved run config once, every ``rounds.csv`` row as it is written and the
round's ``clients.csv`` rows (each honest client's epsilon), and closes it with the run's
status. Everything goes to files, so it works offline: under ``tracker-dir`` (default: the
run folder) as TensorBoard event files, an MLflow store (SQLite) or W&B's offline mode;
``tracker-experiment`` names the MLflow experiment / W&B project (default: the run's
name). ``fl-sweep`` gives all of a sweep's cells one ``tracker-dir`` and experiment.

The packages are optional extras (``pip install -e ".[tracking]"``); asking for a
tracker whose package is missing fails at start, naming ``tracker``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from fl_app.errors import ConfigError

KEY_TRACKER = "tracker"


class Tracker(Protocol):
    """What the recorder calls; every method may be called from the ServerApp only."""

    def log_round(self, row: Mapping[str, Any], clients: Sequence[Mapping[str, Any]]) -> None:
        """One rounds.csv row (``row['round']`` is the step) and that round's client rows."""

    def close(self, status: str) -> None:
        """The run ended (``finished``, ``failed``, ``interrupted``)."""


# name -> (the package it needs, or None; factory(config, log_dir, experiment, run_name))
TrackerFactory = Callable[[Mapping[str, Any], Path, str, str], Tracker]
TRACKERS: dict[str, tuple[str | None, TrackerFactory]] = {}


def register_tracker(name: str, package: str | None, factory: TrackerFactory) -> None:
    """Register a tracker under ``name`` (``package``: the module it imports)."""
    TRACKERS[name] = (package, factory)


def check_tracker(name: str) -> None:
    """A ConfigError naming ``tracker`` for an unknown name or a missing package."""
    if name not in TRACKERS:
        raise ConfigError(KEY_TRACKER, name, f"one of {sorted(TRACKERS)}")
    package = TRACKERS[name][0]
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(KEY_TRACKER, name, "a tracker whose package is installed",
                          f"{name} needs the {package!r} package: pip install -e "
                          "\".[tracking]\" (or pip install the package itself).")


def numeric(row: Mapping[str, Any]) -> dict[str, float]:
    """The columns of a row that are numbers (booleans as 0/1), as floats."""
    return {key: float(value) for key, value in row.items() if isinstance(value, int | float)}


def client_epsilons(clients: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``epsilon/<partition>`` of each client row that reports one (>= 0)."""
    out = {}
    for c in clients:
        try:
            eps = float(c.get("epsilon", ""))
        except (TypeError, ValueError):
            continue
        if eps >= 0:
            out[f"epsilon/{c['partition']}"] = eps
    return out


def open_tracker(name: str, config: Mapping[str, Any], log_dir: Path, experiment: str,
                 run_name: str) -> Tracker | None:
    """The tracker ``name`` for a run (``None`` for ``none``)."""
    check_tracker(name)
    if name == "none":
        return None
    return TRACKERS[name][1](config, log_dir, experiment, run_name)


# Each tracker registers itself on import (after the registry above exists).
from fl_app.runs.trackers import mlflow_tracker, none, tensorboard, wandb_tracker  # noqa: E402, F401
