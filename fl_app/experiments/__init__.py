"""Experiments from Python: one simulation in-process, a sweep of them, their reports.

``from fl_app.experiments import simulate, run_sweep`` gives the two entry points.
"""

from fl_app.experiments.simulate import simulate
from fl_app.experiments.sweep import run_sweep

__all__ = ["run_sweep", "simulate"]
