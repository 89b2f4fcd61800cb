"""Per-cell metrics and the sweep table (``sweep.csv``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fl_app.config import KEYS, PLACEMENT_KEYS
from fl_app.experiments.reports.reading import (
    ATTACK_KEYS,
    METRIC_COLUMNS,
    CellResult,
    format_value,
    ids,
    number,
)
from fl_app.runs.recorder import atomic_write_bytes


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
    text = [[str(c) for c in columns]]
    text += [[format_value(r.get(c, "")) for c in columns] for r in rows]
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
