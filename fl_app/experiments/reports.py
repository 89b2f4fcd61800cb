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
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fl_app.config import KEYS, PLACEMENT_KEYS
from fl_app.runs.recorder import atomic_write_bytes

MANIFEST = "sweep.json"
SWEEP_CSV = "sweep.csv"
PLOT_ACCURACY_PER_ROUND = "accuracy_per_round.png"
PLOT_ACCURACY_VS_ATTACKERS = "accuracy_vs_attackers.png"
PLOT_ACCURACY_VS_IPM_EPSILON = "accuracy_vs_ipm_epsilon.png"
PLOT_ACCURACY_VS_DP_EPSILON = "accuracy_vs_dp_epsilon.png"
METRIC_COLUMNS = ("final_test_accuracy", "best_test_accuracy", "byzantine_selection_rate",
                  "final_epsilon_max", "seconds")
ATTACK_KEYS = ("attack", "ipm-epsilon", "ipm-knowledge", "attack-start-round")
DP_KEYS = ("dp", "dp-noise-multiplier", "dp-target-epsilon", "dp-max-grad-norm", "dp-delta",
           "dp-accountant", "dp-max-epsilon", "dp-grad-sample-mode")
AXIS_LABELS = {"num-attackers": "number of attackers q", "ipm-epsilon": "IPM epsilon",
               "num-byzantine": "declared f", "dirichlet-alpha": "Dirichlet alpha"}
DPI = 150


# ---------------------------------------------------------------------------- reading


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

        A key missing from an older run's summary (added to the app since) reads as
        its default, as :func:`fl_app.experiments.sweep.config_differences` counts it.
        """
        return {**{k: f.default for k, f in KEYS.items()}, **self.summary.get("config", {})}

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
    summary = json.loads((path / "summary.json").read_text())
    return CellResult(path.name, path, summary, read_csv(path / "rounds.csv"))


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
    folders = sorted(p for p in out.iterdir() if (p / "summary.json").is_file()) \
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


# ---------------------------------------------------------------------------- metrics


def byzantine_selection_rate(rounds: Sequence[Mapping[str, str]],
                             attack_start_round: int = 1) -> float | None:
    """Mean over attacked rounds of ``num_selected_byzantine / number selected``.

    Attacked rounds are those from ``attack_start_round`` on with Byzantine
    clients among the sampled and at least one selected update; ``None`` when
    there are none (no attack).

    >>> rows = [{"round": "1", "byzantine_clients": "2", "selected_clients": "2",
    ...          "num_selected_byzantine": "1"},
    ...         {"round": "2", "byzantine_clients": "2", "selected_clients": "0;1;2;3",
    ...          "num_selected_byzantine": "1"}]
    >>> byzantine_selection_rate(rows)
    0.625
    """
    rates = []
    for row in rounds:
        selected = ids(row.get("selected_clients", ""))
        if (int(row["round"]) >= attack_start_round and ids(row.get("byzantine_clients", ""))
                and selected):
            rates.append(int(row.get("num_selected_byzantine") or 0) / len(selected))
    return sum(rates) / len(rates) if rates else None


def final_epsilon(rounds: Sequence[Mapping[str, str]]) -> float | None:
    """The last recorded ``epsilon_max`` (the largest client epsilon); ``None`` without DP."""
    values = [number(r.get("epsilon_max")) for r in rounds]
    values = [v for v in values if v is not None and v >= 0]
    return values[-1] if values else None


def cell_metrics(cell: CellResult) -> dict[str, Any]:
    """The metric columns of ``sweep.csv`` for one cell (empty strings for "none")."""
    rate = byzantine_selection_rate(cell.rounds, int(cell.config.get("attack-start-round", 1)))
    eps = final_epsilon(cell.rounds)
    return {"final_test_accuracy": cell.final_accuracy,
            "best_test_accuracy": cell.best_accuracy,
            "byzantine_selection_rate": "" if rate is None else round(rate, 4),
            "final_epsilon_max": "" if eps is None else eps,
            "seconds": cell.summary.get("seconds", "")}


def varying_keys(cells: Sequence[CellResult]) -> list[str]:
    """Run-config keys whose value differs between cells, in the config's key order."""
    keys = [k for k in KEYS if k not in PLACEMENT_KEYS]
    return [k for k in keys if len({json.dumps(c.config.get(k)) for c in cells}) > 1]


def line_keys(cells: Sequence[CellResult], exclude: Iterable[str] = ()) -> list[str]:
    """The varying keys that tell cells apart in a legend.

    Attack keys that differ only on cells without attackers (a baseline with
    ``attack='none'`` and ``num-attackers=0``) are left out: ``num-attackers=0``
    already says it.
    """
    attacked = [c for c in cells if c.config.get("num-attackers", 0) != 0]
    among_attacked = set(varying_keys(attacked))
    return [k for k in varying_keys(cells) if k not in set(exclude)
            and (k not in ATTACK_KEYS or k in among_attacked)]


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as an aligned plain-text table (notebooks, terminals).

    >>> print(format_table([{"cell": "krum", "acc": 0.5}, {"cell": "fedavg", "acc": 0.75}],
    ...                    ["cell", "acc"]))
    cell    acc
    krum    0.5
    fedavg  0.75
    """
    text = [[str(c) for c in columns]] + [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in text) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                     for line in text)


def override_keys(cells: Sequence[CellResult], manifest: Mapping[str, Any]) -> list[str]:
    """Columns for a cell's overrides: the sweep's grid keys, then any other varying key."""
    keys: list[str] = []
    for cell in manifest.get("cells", []):
        keys += [k for k in cell.get("overrides", {}) if k not in keys]
    return keys + [k for k in varying_keys(cells) if k not in keys]


def sweep_rows(cells: Sequence[CellResult], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One ``sweep.csv`` row per cell: name, the ``keys``' values, then the metrics."""
    return [{"cell": c.name, **{k: c.config.get(k, "") for k in keys}, **cell_metrics(c)}
            for c in cells]


def write_sweep_csv(cells: Sequence[CellResult], path: Path,
                    keys: Sequence[str] | None = None) -> Path:
    """Write ``sweep.csv`` (columns: cell, override keys, :data:`METRIC_COLUMNS`)."""
    keys = list(varying_keys(cells) if keys is None else keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["cell", *keys, *METRIC_COLUMNS],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(sweep_rows(cells, keys))
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


# ---------------------------------------------------------------------------- figures


def new_figure(ncols: int = 1, width: float = 6.0,
               height: float = 4.2) -> tuple[Figure, list[Axes]]:
    """A figure of ``ncols`` panels on the Agg canvas (sized to read well at README width)."""
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.grid(alpha=0.3)
    return fig, list(axes)


def round_axis(ax: Axes) -> None:
    """Label the x axis "round", with integer ticks."""
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def save(fig: Figure, path: str | Path | None) -> Figure:
    """Write ``fig`` as a PNG at ``path`` (atomically) when a path is given; return it."""
    if path is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        atomic_write_bytes(Path(path), buf.getvalue())
    return fig


def label(config: Mapping[str, Any], keys: Iterable[str], default: str = "") -> str:
    """A legend label from config values: ``strategy=krum, num-attackers=3``."""
    return ", ".join(f"{k}={_fmt(config.get(k))}" for k in keys) or default


def _fmt(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def colors(n: int, sequential: bool) -> list[Any]:
    """``n`` line colours: viridis for an ordered series, tab10 (cycled) otherwise."""
    from matplotlib import colormaps

    if sequential:
        return [colormaps["viridis"](0.9 * i / max(n - 1, 1)) for i in range(n)]
    return [colormaps["tab10"](i % 10) for i in range(n)]


def context_title(cells: Sequence[CellResult]) -> str:
    """What all cells share: dataset, strategy, attack and its strength, where constant."""
    shown = ["dataset", "strategy", "attack"]
    config = cells[0].config if cells else {}
    if config.get("attack", "none") != "none":
        shown += ["num-attackers", "ipm-epsilon" if config["attack"] == "ipm" else "",
                  "ipm-knowledge"]
    if config.get("dp"):
        shown += ["dp", "dp-noise-multiplier"]
    varying = set(varying_keys(cells))
    return ", ".join(f"{k}={_fmt(config[k])}" for k in shown if k in config and k not in varying)


def _legend(ax: Axes, n: int) -> None:
    if n:
        ax.legend(fontsize=8, ncol=2 if n > 6 else 1, loc="best", framealpha=0.8)


def plot_accuracy_per_round(cells: Sequence[CellResult], path: str | Path | None = None,
                            panel_key: str = "strategy") -> Figure:
    """Test accuracy per round, one line per cell; one panel per ``panel_key`` value if it varies.

    This is the seed study's figure (Krum under IPM as the number of attackers grows).
    """
    panels = list(dict.fromkeys(c.config.get(panel_key) for c in cells)) \
        if panel_key in varying_keys(cells) else [None]
    keys = line_keys(cells, exclude=[panel_key])
    fig, axes = new_figure(len(panels), width=5.5 if len(panels) > 1 else 6.5)
    for ax, panel in zip(axes, panels, strict=True):
        members = [c for c in cells if panel is None or c.config.get(panel_key) == panel]
        sequential = len(keys) == 1 and all(
            isinstance(c.config.get(keys[0]), (int, float)) for c in members)
        if sequential:  # an ordered series: colours and legend in the key's order
            members.sort(key=lambda c: c.config[keys[0]])
        for cell, color in zip(members, colors(len(members), sequential), strict=True):
            ax.plot([int(r["round"]) for r in cell.rounds], cell.accuracies, color=color,
                    marker="o", markersize=2.5, linewidth=1.4,
                    label=label(cell.config, keys, cell.name))
        round_axis(ax)
        ax.set(ylabel="test accuracy", ylim=(0, 1),
               title=f"{panel_key}={_fmt(panel)}" if panel is not None else "")
        _legend(ax, len(members) if len(cells) > 1 else 0)
    fig.suptitle(context_title(cells), fontsize=10)
    return save(fig, path)


def _groups(cells: Sequence[CellResult], x_key: str) -> dict[str, list[CellResult]]:
    """Cells by the varying keys other than ``x_key``, one group per line.

    A cell without attackers (``num-attackers = 0``) does not depend on the attack
    keys, so it joins every line that matches it on the other keys (a baseline
    run with ``attack='none'`` becomes the q = 0 point of each attacked line).
    """
    keys = line_keys(cells, exclude=[x_key])
    attacked = [c for c in cells if c.config.get("num-attackers", 0) != 0]
    clean = [c for c in cells if c.config.get("num-attackers", 0) == 0]
    groups: dict[str, list[CellResult]] = {}
    for cell in attacked:
        groups.setdefault(label(cell.config, keys), []).append(cell)
    rest = [k for k in keys if k not in ATTACK_KEYS]
    for cell in clean:
        matches = [g for g, members in groups.items()
                   if label(members[0].config, rest) == label(cell.config, rest)]
        for g in matches or [label(cell.config, keys)]:
            groups.setdefault(g, []).append(cell)
    return groups


def plot_final_accuracy(cells: Sequence[CellResult], x_key: str = "num-attackers",
                        path: str | Path | None = None, log_x: bool = False) -> Figure:
    """Final test accuracy against a swept key, one line per value of the other varying keys.

    E.g. against ``num-attackers`` with one line per strategy.
    """
    fig, (ax,) = new_figure()
    groups = _groups(cells, x_key)
    for (name, members), color in zip(groups.items(), colors(len(groups), False), strict=True):
        members = sorted(members, key=lambda c: float(c.config.get(x_key, 0)))
        ax.plot([float(c.config.get(x_key, 0)) for c in members],
                [c.final_accuracy for c in members], marker="o", color=color,
                label=name or "all cells")
    if log_x:
        ax.set_xscale("log")
    elif all(isinstance(c.config.get(x_key), int) for c in cells):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel=AXIS_LABELS.get(x_key, x_key), ylabel="final test accuracy", ylim=(0, 1))
    _legend(ax, len(groups))
    fig.suptitle(context_title(cells), fontsize=10)
    return save(fig, path)


def plot_accuracy_vs_dp_epsilon(cells: Sequence[CellResult],
                                path: str | Path | None = None) -> Figure:
    """Final test accuracy against the final DP epsilon (max over clients).

    One line per value of the varying non-DP keys (e.g. strategy); runs without
    DP are drawn as dashed horizontal lines for reference.
    """
    fig, (ax,) = new_figure()
    keys = [k for k in varying_keys(cells) if k not in DP_KEYS]
    groups: dict[str, list[CellResult]] = {}
    for cell in cells:
        groups.setdefault(label(cell.config, keys), []).append(cell)
    eps_all = []
    for (name, members), color in zip(groups.items(), colors(len(groups), False), strict=True):
        private = sorted(((final_epsilon(c.rounds), c) for c in members
                          if final_epsilon(c.rounds) is not None), key=lambda t: t[0])
        if private:
            ax.plot([e for e, _ in private], [c.final_accuracy for _, c in private],
                    marker="o", color=color, label=name or "DP-SGD")
            for eps, cell in private:
                sigma = cell.config.get("dp-noise-multiplier")
                ax.annotate(f"σ={sigma}", (eps, cell.final_accuracy), fontsize=7,
                            textcoords="offset points", xytext=(4, 4))
            eps_all += [e for e, _ in private]
        for cell in members:
            if final_epsilon(cell.rounds) is None:
                ax.axhline(cell.final_accuracy, color=color, linestyle="--", linewidth=1,
                           label=f"{name + ', ' if name else ''}no DP")
    if eps_all and max(eps_all) / max(min(eps_all), 1e-12) > 20:
        ax.set_xscale("log")
    if not eps_all:
        ax.text(0.5, 0.5, "no run recorded a DP epsilon", transform=ax.transAxes,
                ha="center", va="center", color="grey")
    ax.set(xlabel="final epsilon (max over clients)", ylabel="final test accuracy",
           ylim=(0, 1))
    _legend(ax, len(ax.get_legend_handles_labels()[0]))
    fig.suptitle(context_title(cells), fontsize=10)
    return save(fig, path)


# ---------------------------------------------------------------------------- one run


def plot_run_curves(run_dir: str | Path, path: str | Path | None = None) -> Figure:
    """One run's curves from rounds.csv: test accuracy, and test and honest train loss."""
    run = load_run(run_dir)
    rounds = [int(r["round"]) for r in run.rounds]
    fig, (acc_ax, loss_ax) = new_figure(2, width=5.0)
    acc_ax.plot(rounds, run.accuracies, marker="o", markersize=3)
    round_axis(acc_ax)
    acc_ax.set(ylabel="test accuracy", ylim=(0, 1))
    loss_ax.plot(rounds, [float(r["test_loss"]) for r in run.rounds], marker="o",
                 markersize=3, label="test loss (global model)")
    train = [(int(r["round"]), number(r["train_loss"])) for r in run.rounds]
    train = [(x, y) for x, y in train if y is not None]
    loss_ax.plot([x for x, _ in train], [y for _, y in train], marker="s", markersize=3,
                 label="train loss (mean of honest clients)")
    round_axis(loss_ax)
    loss_ax.set(ylabel="loss")
    _legend(loss_ax, 2)
    fig.suptitle(context_title([run]), fontsize=10)
    return save(fig, path)


def plot_krum_selection(run_dir: str | Path, path: str | Path | None = None) -> Figure:
    """Which clients the aggregator selected each round, and (Krum) every client's score.

    Left: sampled clients per round (grey), the Byzantine ones (red x), the
    selected updates (ringed). Right, from krum_scores.csv: each client's Krum
    score per round (lower is chosen), Byzantine in red, selected ringed.
    """
    run = load_run(run_dir)
    scores = read_csv(run.path / "krum_scores.csv")
    fig, axes = new_figure(2 if scores else 1, width=5.5)
    ax = axes[0]
    byzantine = {int(r["round"]): set(ids(r.get("byzantine_clients", ""))) for r in run.rounds}
    for row in run.rounds[1:]:
        rnd, sampled = int(row["round"]), ids(row.get("sampled_clients", ""))
        honest = [c for c in sampled if c not in byzantine[rnd]]
        ax.scatter([rnd] * len(honest), honest, s=12, color="0.6")
        ax.scatter([rnd] * len(byzantine[rnd]), sorted(byzantine[rnd]), s=22, color="tab:red",
                   marker="x")
        chosen = ids(row.get("selected_clients", ""))
        ax.scatter([rnd] * len(chosen), chosen, s=70, facecolors="none", edgecolors="black")
    ax.scatter([], [], s=12, color="0.6", label="honest (sampled)")
    ax.scatter([], [], s=22, color="tab:red", marker="x", label="Byzantine")
    ax.scatter([], [], s=70, facecolors="none", edgecolors="black", label="selected")
    round_axis(ax)
    ax.set(ylabel="client (partition id)", title="selected updates")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if scores:
        ax = axes[1]
        for row in scores:
            rnd, pid = int(row["round"]), int(row["partition"])
            is_byz = pid in byzantine.get(rnd, set())
            ax.scatter(rnd, float(row["score"]), s=12 if not is_byz else 22,
                       color="tab:red" if is_byz else "0.6", marker="x" if is_byz else "o")
            if row["selected"] == "1":
                ax.scatter(rnd, float(row["score"]), s=70, facecolors="none", edgecolors="black")
        positive = [float(r["score"]) for r in scores if float(r["score"]) > 0]
        if positive and max(positive) / min(positive) > 100:
            ax.set_yscale("log")
        round_axis(ax)
        ax.set(ylabel="Krum score (lower is selected)", title="Krum scores")
    fig.suptitle(context_title([run]), fontsize=10)
    return save(fig, path)


def plot_client_epsilon(run_dir: str | Path, path: str | Path | None = None) -> Figure:
    """Each client's cumulative DP epsilon over rounds (clients.csv), and the round's max."""
    run = load_run(run_dir)
    per_client: dict[str, list[tuple[int, float]]] = {}
    for row in read_csv(run.path / "clients.csv"):
        eps = number(row.get("epsilon"))
        if eps is not None and eps >= 0:
            per_client.setdefault(row["partition"], []).append((int(row["round"]), eps))
    fig, (ax,) = new_figure()
    order = sorted(per_client, key=lambda p: (len(p), p))
    for pid, color in zip(order, colors(len(order), True), strict=True):
        points = sorted(per_client[pid])
        ax.plot([r for r, _ in points], [e for _, e in points], marker="o", markersize=2.5,
                linewidth=1, color=color, label=f"client {pid}")
    top = [(int(r["round"]), number(r.get("epsilon_max"))) for r in run.rounds]
    top = [(x, y) for x, y in top if y is not None and y >= 0]
    if top:
        ax.plot([x for x, _ in top], [y for _, y in top], color="black", linestyle="--",
                linewidth=1.5, label="max over clients")
    if not per_client:
        ax.text(0.5, 0.5, "no client recorded a DP epsilon (dp = false?)",
                transform=ax.transAxes, ha="center", va="center", color="grey")
    round_axis(ax)
    ax.set(ylabel="cumulative epsilon")
    _legend(ax, len(order) + bool(top) if len(order) <= 12 else int(bool(top)))
    fig.suptitle(context_title([run]), fontsize=10)
    return save(fig, path)


# ---------------------------------------------------------------------------- a sweep


def write_reports(out: str | Path) -> list[Path]:
    """Write ``sweep.csv`` and every plot that applies to the finished cells under ``out``.

    Always: ``sweep.csv`` and test accuracy per round. When ``num-attackers``
    varies: final accuracy against it; when ``ipm-epsilon`` varies: against that;
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
    if "ipm-epsilon" in keys:
        plots[PLOT_ACCURACY_VS_IPM_EPSILON] = lambda p: plot_final_accuracy(
            cells, "ipm-epsilon", p, log_x=_spans_decades(cells, "ipm-epsilon"))
    if {"dp", "dp-noise-multiplier", "dp-target-epsilon"} & set(keys):
        plots[PLOT_ACCURACY_VS_DP_EPSILON] = lambda p: plot_accuracy_vs_dp_epsilon(cells, p)
    for name in (PLOT_ACCURACY_PER_ROUND, PLOT_ACCURACY_VS_ATTACKERS,
                 PLOT_ACCURACY_VS_IPM_EPSILON, PLOT_ACCURACY_VS_DP_EPSILON):
        if name in plots:
            plots[name](out / name)
            written.append(out / name)
        else:
            (out / name).unlink(missing_ok=True)
    return written


def _spans_decades(cells: Sequence[CellResult], key: str) -> bool:
    """Whether a positive numeric key spans more than a factor 20 (then plot it on log x)."""
    values = [float(c.config[key]) for c in cells if float(c.config.get(key, 0)) > 0]
    return bool(values) and math.log10(max(values) / min(values)) > math.log10(20)
