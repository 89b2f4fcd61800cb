"""The robustness matrix: aggregators x attacks x heterogeneity, aggregated over seeds.

Written by :func:`fl_app.experiments.reports.write_reports` when a sweep varies both
``strategy`` and ``attack`` (any other varying key, such as ``seed``, is aggregated
over; ``num-attackers`` and the data heterogeneity label the rows):

- ``matrix.csv``: final test accuracy, mean, std and count over seeds, one row per
  (heterogeneity, num-attackers, strategy, attack);
- ``matrix_worst_case.csv``: per aggregator, the worst mean over the attacks (the metric
  the ByzFL benchmark ranks by), and which attack it was;
- ``matrix_backdoor.csv`` (when the sweep ran ``backdoor``): per aggregator, the final
  backdoor accuracy (triggered test images classified as the target), mean, std and
  count over seeds; the clean accuracy of those cells is in ``matrix.csv``;
- ``matrix_heatmap_<heterogeneity>.png``: aggregator x attack, mean final accuracy;
- ``matrix_curves_<heterogeneity>.png``: accuracy per round, one panel per attack, one
  line per aggregator, the mean with its 95% confidence band over seeds.

Tables are pandas, figures seaborn (both come with flwr-datasets).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fl_app.experiments.reports.reading import DPI, CellResult

MATRIX_CSV = "matrix.csv"
WORST_CASE_CSV = "matrix_worst_case.csv"
HEATMAP = "matrix_heatmap_{}.png"
CURVES = "matrix_curves_{}.png"
BACKDOOR_CSV = "matrix_backdoor.csv"
ROWS = ["heterogeneity", "num-attackers", "strategy", "attack"]


def heterogeneity(config: dict) -> str:
    """``iid`` or ``dirichlet-<alpha>``: the data heterogeneity of a run, as a label.

    >>> heterogeneity({"partitioning": "dirichlet", "dirichlet-alpha": 0.1})
    'dirichlet-0.1'
    """
    partitioning = config.get("partitioning", "iid")
    if partitioning in ("dirichlet", "inner-dirichlet"):
        return f"{partitioning}-{config.get('dirichlet-alpha')}"
    if partitioning == "pathological":
        return f"pathological-{config.get('partition-classes', 2)}"
    if partitioning == "shard":
        return f"shard-{config.get('partition-shards', 2)}"
    return str(partitioning)


def is_matrix(cells: Sequence[CellResult]) -> bool:
    """Whether these cells form a robustness matrix (several strategies and attacks)."""
    return (len({c.config.get("strategy") for c in cells}) > 1
            and len({c.config.get("attack") for c in cells}) > 1)


def final_accuracies(cells: Sequence[CellResult]):
    """One row per cell: its matrix coordinates, seed and final test accuracy (a DataFrame)."""
    import pandas as pd

    return pd.DataFrame([{"heterogeneity": heterogeneity(c.config),
                          "num-attackers": c.config.get("num-attackers", 0),
                          "strategy": c.config.get("strategy"), "attack": c.config.get("attack"),
                          "seed": c.config.get("seed", 0), "final_accuracy": c.final_accuracy}
                         for c in cells])


def matrix_table(cells: Sequence[CellResult]):
    """Mean, std and count of the final accuracy over seeds (a DataFrame, ``ROWS`` first)."""
    frame = final_accuracies(cells)
    table = frame.groupby(ROWS)["final_accuracy"].agg(["mean", "std", "count"]).reset_index()
    return table.rename(columns={"mean": "final_accuracy_mean", "std": "final_accuracy_std",
                                 "count": "seeds"})


def worst_case(table):
    """Per (heterogeneity, num-attackers, strategy): the attack with the lowest mean."""
    attacked = table[table["attack"] != "none"]
    rows = attacked.loc[attacked.groupby(ROWS[:3])["final_accuracy_mean"].idxmin()]
    return rows.rename(columns={"attack": "worst_attack",
                                "final_accuracy_mean": "worst_case_accuracy"})[
        [*ROWS[:3], "worst_attack", "worst_case_accuracy"]].reset_index(drop=True)


def backdoor_table(cells: Sequence[CellResult]):
    """Final backdoor accuracy over seeds per (heterogeneity, num-attackers, strategy).

    A DataFrame, or None when no cell ran the backdoor.
    """
    import pandas as pd

    frame = pd.DataFrame([{"heterogeneity": heterogeneity(c.config),
                           "num-attackers": c.config.get("num-attackers", 0),
                           "strategy": c.config.get("strategy"),
                           "backdoor_accuracy": float(c.rounds[-1]["backdoor_accuracy"])}
                          for c in cells if c.config.get("attack") == "backdoor"
                          and c.rounds and c.rounds[-1].get("backdoor_accuracy")])
    if frame.empty:
        return None
    table = frame.groupby(ROWS[:3])["backdoor_accuracy"].agg(["mean", "std", "count"])
    return table.reset_index().rename(columns={"mean": "backdoor_accuracy_mean",
                                               "std": "backdoor_accuracy_std",
                                               "count": "seeds"})


def _curves_frame(cells: Sequence[CellResult]):
    import pandas as pd

    return pd.DataFrame([{"heterogeneity": heterogeneity(c.config),
                          "strategy": c.config.get("strategy"), "attack": c.config.get("attack"),
                          "seed": c.config.get("seed", 0), "round": int(r["round"]),
                          "test_accuracy": float(r["test_accuracy"])}
                         for c in cells for r in c.rounds])


def write_matrix(cells: Sequence[CellResult], out: Path) -> list[Path]:
    """Write the tables and figures of the module docstring; return the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    table = matrix_table(cells)
    written = [out / MATRIX_CSV, out / WORST_CASE_CSV]
    table.to_csv(written[0], index=False)
    worst_case(table).to_csv(written[1], index=False)
    backdoor = backdoor_table(cells)
    if backdoor is not None:
        written.append(out / BACKDOOR_CSV)
        backdoor.to_csv(written[-1], index=False)
    curves = _curves_frame(cells)
    for level, part in table.groupby("heterogeneity"):
        grid = part.pivot_table(index="strategy", columns="attack",
                                values="final_accuracy_mean", aggfunc="mean")
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * grid.shape[1], 1.0 + 0.5 * grid.shape[0]))
        sns.heatmap(grid, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax)
        ax.set_title(f"final test accuracy, {level} (mean over seeds)")
        fig.tight_layout()
        written.append(out / HEATMAP.format(level))
        fig.savefig(written[-1], dpi=DPI)
        plt.close(fig)
        facets = sns.relplot(data=curves[curves["heterogeneity"] == level], x="round",
                             y="test_accuracy", hue="strategy", col="attack", kind="line",
                             errorbar=("ci", 95), col_wrap=min(4, grid.shape[1]), height=2.6)
        facets.set(ylim=(0, 1))
        written.append(out / CURVES.format(level))
        facets.savefig(written[-1], dpi=DPI)
        plt.close(facets.figure)
    return written
