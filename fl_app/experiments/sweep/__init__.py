r"""Run a grid of simulations in this process: one result folder per cell, resumable, reported.

A sweep is a base configuration (a preset: a TOML file of run-config overrides,
plus ``--set`` overrides) and one or more grids (``--grid KEY=V1,V2,...``); each
cell of the grids' Cartesian products is one in-process run of
:func:`fl_app.experiments.simulate.simulate`, written to ``<out>/<cell name>/``, a name made
from the cell's grid values in the order the grid gives them, e.g.
``num-attackers=3,strategy=krum``::

    fl-sweep --preset fl_app/config/presets/seed-krum-ipm.toml --set data-dir=/data/cifar10-jpeg \
        --grid num-attackers=1,2,3 strategy=fedavg,krum --num-supernodes 100 \
        --out ~/fl-sweeps/seed

Every cell is validated (:func:`fl_app.config.parse_run_config` and the checks
that need the federation's size) before anything runs, and all errors are
reported together. Re-running the same command resumes: a cell whose
``summary.json`` says ``finished`` with the same configuration is skipped; a cell
left by an interrupted run continues from its last checkpointed round
(``resume = true``, :mod:`fl_app.runs.checkpoint`), and one without a usable
checkpoint is deleted and starts over cleanly. A cell
that finished with a *different* configuration is never overwritten: the sweep
stops before running anything and says so.

A cell runs exactly what ``flwr run`` runs with the same run config (same
ServerApp, ClientApp and seeds), so its numbers are the same. The reports
(``sweep.csv`` and plots, :mod:`fl_app.experiments.reports`) are rewritten beside the cells
as cells finish (at most every 30 s) and at the end; ``fl-sweep --report-only --out DIR``
regenerates them. ``--jobs N`` runs N cells at once (:mod:`~fl_app.experiments.sweep.parallel`);
either way each process keeps one Ray instance and its actors for all its cells
(:mod:`fl_app.experiments.engine`).

The package: :mod:`~fl_app.experiments.sweep.values` (command-line values),
:mod:`~fl_app.experiments.sweep.cells` (planning and validating cells),
:mod:`~fl_app.experiments.sweep.resume` (where each cell stands),
:mod:`~fl_app.experiments.sweep.progress`, :mod:`~fl_app.experiments.sweep.runner`
(:func:`run_sweep`) and :mod:`~fl_app.experiments.sweep.cli` (``fl-sweep``).
"""

from fl_app.config.preset import load_preset, preset_names
from fl_app.experiments.sweep.cells import (
    Cell,
    CellRunner,
    SweepError,
    SweepResult,
    cell_name,
    expand_grid,
    plan_cells,
    validate_cells,
)
from fl_app.experiments.sweep.cli import build_parser, main
from fl_app.experiments.sweep.progress import RichProgress, SweepProgress, make_progress
from fl_app.experiments.sweep.resume import cell_state
from fl_app.experiments.sweep.runner import run_sweep, simulate_runner
from fl_app.experiments.sweep.values import parse_grid, parse_overrides, parse_value
from fl_app.runs.layout import config_differences

__all__ = ["Cell", "CellRunner", "RichProgress", "SweepError", "SweepProgress", "SweepResult",
           "build_parser", "cell_name", "cell_state", "config_differences", "expand_grid",
           "load_preset", "main", "make_progress", "parse_grid", "parse_overrides",
           "parse_value", "plan_cells", "preset_names", "run_sweep", "simulate_runner",
           "validate_cells"]
