"""Where each cell stands (new, finished, interrupted, changed), decided before anything runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fl_app.config import parse_run_config
from fl_app.experiments.sweep.cells import Cell, SweepError
from fl_app.runs.layout import config_differences, read_summary


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
        summary = read_summary(cell_dir)
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
        old = read_summary(out / cell.name)["config"]
        diff = config_differences(old, parse_run_config(cell.run_config).as_dict())
        lines.append(f"  - {cell.name}: " + ", ".join(f"{k}: {a!r} -> {b!r}"
                                                       for k, (a, b) in diff.items()))
    raise SweepError(
        f"{len(changed)} cell(s) in {out} finished with another configuration:\n"
        + "\n".join(lines)
        + "\nDelete those folders to rerun them, or choose another --out.")
