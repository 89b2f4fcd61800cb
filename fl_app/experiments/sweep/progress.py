"""Progress of a sweep: a live display on a terminal, plain lines otherwise."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from fl_app.experiments.sweep.cells import Cell


class SweepProgress:
    """Progress as plain lines (logs, notebooks, pipes); :class:`RichProgress` for terminals."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.index = 0
        self.rounds = 0
        self.best = 0.0

    def __enter__(self) -> SweepProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def cell_started(self, index: int, cell: Cell, num_rounds: int) -> None:
        """A cell (1-based ``index``) starts ``num_rounds`` rounds."""
        self.index, self.rounds, self.best = index, num_rounds, 0.0
        self.say(f"cell {index}/{self.total} {cell.name}: {num_rounds} rounds")

    def round_done(self, row: Mapping[str, Any]) -> None:
        """A round's rounds.csv row arrived (round 0 is the initial model)."""
        acc = float(row["test_accuracy"])
        self.best = max(self.best, acc)
        self.say(f"cell {self.index}/{self.total} round {row['round']}/{self.rounds}: "
                 f"test accuracy {acc:.4f} (best {self.best:.4f})")

    def cell_done(self, index: int, cell: Cell, status: str) -> None:
        """A cell ended: ``status`` is e.g. ``finished in 41 s``, ``skipped``, ``failed: ...``."""
        self.say(f"cell {index}/{self.total} {cell.name}: {status}")

    def say(self, line: str) -> None:
        """Print one progress line."""
        print(f"[fl-sweep] {line}", flush=True)


class RichProgress(SweepProgress):
    """A live display: cell k of N, round r of R, accuracy so far (rich)."""

    def __init__(self, total: int, console: Any = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        super().__init__(total)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        self.sweep_task = self.progress.add_task("cells", total=total)
        self.round_task: Any = None

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def cell_started(self, index: int, cell: Cell, num_rounds: int) -> None:
        """Show the cell and a bar of its rounds."""
        self.index, self.rounds, self.best = index, num_rounds, 0.0
        self.progress.update(self.sweep_task, description=f"cell {index}/{self.total} "
                                                          f"{cell.name}")
        self.round_task = self.progress.add_task("  round 0", total=num_rounds)

    def round_done(self, row: Mapping[str, Any]) -> None:
        """Advance the round bar and show accuracy so far."""
        acc = float(row["test_accuracy"])
        self.best = max(self.best, acc)
        self.progress.update(self.round_task, completed=int(row["round"]),
                             description=f"  round {row['round']}/{self.rounds}  "
                                         f"accuracy {acc:.3f} (best {self.best:.3f})")

    def cell_done(self, index: int, cell: Cell, status: str) -> None:
        """Log the cell's outcome above the bars and advance the sweep bar."""
        if self.round_task is not None:
            self.progress.remove_task(self.round_task)
            self.round_task = None
        self.progress.advance(self.sweep_task)
        self.say(f"cell {index}/{self.total} {cell.name}: {status}")

    def say(self, line: str) -> None:
        """Print a line above the live display."""
        self.progress.console.print(f"[fl-sweep] {line}", markup=False, highlight=False)


def make_progress(total: int, plain: bool = False) -> SweepProgress:
    """A live display on a terminal, plain lines elsewhere (pipes, logs, Jupyter)."""
    if not plain:
        from rich.console import Console

        console = Console()
        if console.is_terminal and not console.is_jupyter:
            return RichProgress(total, console)
    return SweepProgress(total)


def _not_run_simulation_deprecation(record: logging.LogRecord) -> bool:
    """Drop Flower's notice that ``run_simulation`` is deprecated (the sweep relies on it)."""
    return "run_simulation" not in record.getMessage()


@contextlib.contextmanager
def quiet_flower(quiet: bool = True) -> Iterator[None]:
    """Raise Flower's logger to WARNING while cells run (its INFO lines would break the display).

    Also drops the per-run notice that ``run_simulation`` is deprecated.
    """
    logger = logging.getLogger("flwr")
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
        logger.addFilter(_not_run_simulation_deprecation)
    try:
        yield
    finally:
        logger.setLevel(level)
        logger.removeFilter(_not_run_simulation_deprecation)
