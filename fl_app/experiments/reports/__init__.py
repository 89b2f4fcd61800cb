"""Tables and plots from result folders: a sweep's ``sweep.csv`` and figures, and one run's.

Everything here reads what runs wrote (``summary.json``, ``rounds.csv``,
``clients.csv``, ``krum_scores.csv``; see :mod:`fl_app.runs.recorder`), so reports can
be regenerated at any time (``fl-sweep --report-only --out DIR``) and notebooks
plot with the same functions. Figures are ``matplotlib.figure.Figure`` objects on
the Agg canvas (no GUI, no pyplot state); each plotting function returns its
figure and, given ``path``, also writes it as a PNG.

A sweep folder holds one folder per cell and ``sweep.json`` (written by
:mod:`fl_app.experiments.sweep`: the cells' names and grid values, in order). A *cell* here
is any sub-folder whose ``summary.json`` says ``finished``.

Byzantine selection rate of a run: the mean, over the attacked rounds (from
``attack-start-round`` on, with Byzantine clients among those sampled), of
``num_selected_byzantine / number of updates the aggregator selected``. FedAvg
selects every update, so its rate is the share of attackers, ``q / n``; Krum
under IPM with small epsilon approaches 1 (Xie et al., UAI 2019).

The package: :mod:`~fl_app.experiments.reports.reading` (result folders),
:mod:`~fl_app.experiments.reports.metrics` (per-cell metrics, ``sweep.csv``),
:mod:`~fl_app.experiments.reports.figures` and
:mod:`~fl_app.experiments.reports.sweep_report` (:func:`write_reports`).
"""

from fl_app.experiments.reports.figures import (
    plot_accuracy_per_round,
    plot_accuracy_vs_dp_epsilon,
    plot_client_epsilon,
    plot_final_accuracy,
    plot_krum_selection,
    plot_run_curves,
    save,
)
from fl_app.experiments.reports.metrics import (
    byzantine_selection_rate,
    cell_metrics,
    final_epsilon,
    format_table,
    write_sweep_csv,
)
from fl_app.experiments.reports.reading import (
    MANIFEST,
    METRIC_COLUMNS,
    SWEEP_CSV,
    CellResult,
    ids,
    load_cells,
    load_run,
    read_csv,
)
from fl_app.experiments.reports.sweep_report import write_reports

__all__ = ["MANIFEST", "METRIC_COLUMNS", "SWEEP_CSV", "CellResult", "byzantine_selection_rate",
           "cell_metrics", "final_epsilon", "format_table", "ids", "load_cells", "load_run",
           "plot_accuracy_per_round", "plot_accuracy_vs_dp_epsilon", "plot_client_epsilon",
           "plot_final_accuracy", "plot_krum_selection", "plot_run_curves", "read_csv", "save",
           "write_reports", "write_sweep_csv"]
