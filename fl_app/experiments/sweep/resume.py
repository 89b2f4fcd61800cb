"""Where each cell stands (new, finished, interrupted, changed), decided before anything runs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fl_app.config import KEYS, parse_run_config
from fl_app.experiments.sweep.cells import Cell, SweepError, comparable_config


def config_differences(recorded: Mapping[str, Any], wanted: Mapping[str, Any]
                       ) -> dict[str, tuple[Any, Any]]:
    """Keys whose recorded value differs from the wanted one: ``{key: (recorded, wanted)}``.

    A key missing from ``recorded`` (a run made before the key existed) counts as
    its default. Keys only in ``recorded`` (since removed) and the keys that only
    say where a run was written are ignored.

    >>> config_differences({"seed": 0, "strategy": "krum"}, {"seed": 1, "strategy": "krum"})
    {'seed': (0, 1)}
    >>> config_differences({"seed": 0}, {"seed": 0, "num-server-rounds": 20})
    {}
    """
    missing = object()
    diff = {}
    for key, value in comparable_config(wanted).items():
        old = recorded.get(key, missing)
        if old is missing:
            old = KEYS[key].default if key in KEYS else None
            if old == value:
                continue
        if old != value:
            diff[key] = (old, value)
    return diff


def cell_state(cell: Cell, cell_dir: Path) -> str:
    """Where a cell stands: ``new``, ``finished``, ``interrupted`` or ``changed``.

    ``finished`` needs summary.json with status ``finished`` and the cell's
    configuration (:func:`config_differences` empty); ``changed`` is a finished
    run of another configuration; anything else in an existing folder is
    ``interrupted``.
    """
    if not cell_dir.exists():
        return "new"
    try:
        summary = json.loads((cell_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return "interrupted"
    if summary.get("status") != "finished":
        return "interrupted"
    wanted = parse_run_config(cell.run_config).as_dict()
    return "changed" if config_differences(summary.get("config", {}), wanted) else "finished"


def check_no_changed_cells(out: Path, cells: Sequence[Cell]) -> None:
    """Refuse to run over finished cells of another configuration.

    Raises:
        SweepError: Naming the cells, the keys that differ and how to proceed.
    """
    changed = [c for c in cells if cell_state(c, out / c.name) == "changed"]
    if not changed:
        return
    lines = []
    for cell in changed:
        old = json.loads((out / cell.name / "summary.json").read_text())["config"]
        diff = config_differences(old, parse_run_config(cell.run_config).as_dict())
        lines.append(f"  - {cell.name}: " + ", ".join(f"{k}: {a!r} -> {b!r}"
                                                       for k, (a, b) in diff.items()))
    raise SweepError(
        f"{len(changed)} cell(s) in {out} finished with another configuration:\n"
        + "\n".join(lines)
        + "\nDelete those folders to rerun them, or choose another --out.")
