"""All of a sweep's reports at once, rewritten as cells finish and at the end."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from fl_app.config import DECLARED
from fl_app.experiments.reports.figures import (
    plot_accuracy_per_round,
    plot_accuracy_vs_dp_epsilon,
    plot_final_accuracy,
)
from fl_app.experiments.reports.matrix import is_matrix, write_matrix
from fl_app.experiments.reports.metrics import override_keys, varying_keys, write_sweep_csv
from fl_app.experiments.reports.reading import (
    PLOT_ACCURACY_PER_ROUND,
    PLOT_ACCURACY_VS_ATTACKERS,
    PLOT_ACCURACY_VS_DP_EPSILON,
    SWEEP_CSV,
    CellResult,
    load_cells,
    plot_accuracy_vs,
    read_manifest,
)


def write_reports(out: str | Path) -> list[Path]:
    """Write ``sweep.csv`` and every plot that applies to the finished cells under ``out``.

    Always: ``sweep.csv`` and test accuracy per round. When ``num-attackers``
    varies: final accuracy against it; when a parameter a strategy or attack declares
    varies (``ipm-epsilon``, ...): against that (:func:`plot_accuracy_vs`);
    when a DP key varies (``dp``, ``dp-noise-multiplier``, ``dp-target-epsilon``):
    final accuracy against the final DP epsilon. A plot that no longer applies
    is removed. Returns the files written (none when no cell has finished).
    """
    out = Path(out)
    cells, _ = load_cells(out)
    if not cells:
        return []
    keys = varying_keys(cells)
    written = [write_sweep_csv(cells, out / SWEEP_CSV, override_keys(cells, read_manifest(out)))]
    plots = {PLOT_ACCURACY_PER_ROUND: lambda p: plot_accuracy_per_round(cells, p)}
    if "num-attackers" in keys:
        plots[PLOT_ACCURACY_VS_ATTACKERS] = lambda p: plot_final_accuracy(cells, "num-attackers", p)
    for key in (k for k in DECLARED if k in keys):
        plots[plot_accuracy_vs(key)] = lambda p, key=key: plot_final_accuracy(
            cells, key, p, log_x=_spans_decades(cells, key))
    if {"dp", "dp-noise-multiplier", "dp-target-epsilon"} & set(keys):
        plots[PLOT_ACCURACY_VS_DP_EPSILON] = lambda p: plot_accuracy_vs_dp_epsilon(cells, p)
    for name in (PLOT_ACCURACY_PER_ROUND, PLOT_ACCURACY_VS_ATTACKERS,
                 *map(plot_accuracy_vs, DECLARED), PLOT_ACCURACY_VS_DP_EPSILON):
        if name in plots:
            plots[name](out / name)
            written.append(out / name)
        else:
            (out / name).unlink(missing_ok=True)
    if is_matrix(cells):  # several aggregators and attacks: the robustness matrix
        written += write_matrix(cells, out)
    return written


def _spans_decades(cells: Sequence[CellResult], key: str) -> bool:
    """Whether a positive numeric key spans more than a factor 20 (then plot it on log x)."""
    values = [float(c.config[key]) for c in cells if float(c.config.get(key, 0)) > 0]
    return bool(values) and math.log10(max(values) / min(values)) > math.log10(20)
