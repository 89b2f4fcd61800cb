"""The figures: a sweep's (accuracy per round, against q, epsilon) and one run's."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fl_app.config import DECLARED
from fl_app.config.methods import ATTACK
from fl_app.experiments.reports.metrics import final_epsilon, line_keys, varying_keys
from fl_app.experiments.reports.reading import (
    ATTACK_KEYS,
    AXIS_LABELS,
    DP_KEYS,
    DPI,
    CellResult,
    format_value,
    ids,
    load_run,
    number,
    read_csv,
)
from fl_app.runs import layout
from fl_app.runs.recorder import atomic_write_bytes


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
    return ", ".join(f"{k}={format_value(config.get(k))}" for k in keys) or default


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
        shown += ["num-attackers", *(key for key, d in DECLARED.items()
                                     if d.role == ATTACK and d.method == config["attack"]),
                  "attack-knowledge"]
    if config.get("dp"):
        shown += ["dp", "dp-noise-multiplier"]
    varying = set(varying_keys(cells))
    return ", ".join(f"{k}={format_value(config[k])}" for k in shown
                     if k in config and k not in varying)


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
               title=f"{panel_key}={format_value(panel)}" if panel is not None else "")
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
    scores = read_csv(run.path / layout.KRUM_SCORES)
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
    for row in read_csv(run.path / layout.CLIENTS):
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
