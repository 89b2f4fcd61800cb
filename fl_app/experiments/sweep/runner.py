"""Running a sweep: every cell not finished yet, then the reports."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fl_app.config import parse_run_config
from fl_app.config.preset import KEY_PRESET, load_preset
from fl_app.errors import ConfigError, ConfigErrors
from fl_app.experiments import reports
from fl_app.experiments.engine import shared_ray
from fl_app.experiments.simulate import DEFAULT_CLIENT_CPUS
from fl_app.experiments.sweep.cells import (
    DEFAULT_NUM_SUPERNODES,
    Cell,
    CellRunner,
    Grid,
    RoundCallback,
    SweepError,
    SweepResult,
    plan_cells,
    validate_cells,
)
from fl_app.experiments.sweep.parallel import cores_per_job, run_cells_in_jobs
from fl_app.experiments.sweep.prefix import keeping_prefix, start_from_prefix
from fl_app.experiments.sweep.progress import SweepProgress, make_progress, quiet_flower
from fl_app.experiments.sweep.resume import cell_state, check_no_changed_cells
from fl_app.runs.checkpoint import CheckpointError, load_checkpoint, resume_errors
from fl_app.runs.throttle import Throttle


def simulate_runner(num_cpus_per_client: float | None = None, verbose: bool = False
                    ) -> CellRunner:
    """The default :class:`CellRunner`: :func:`~fl_app.experiments.simulate.simulate` here."""
    from fl_app.experiments.simulate import simulate

    cpus = DEFAULT_CLIENT_CPUS if num_cpus_per_client is None else num_cpus_per_client

    def run(run_config: Mapping[str, Any], num_supernodes: int, on_round: RoundCallback) -> Path:
        return simulate(run_config, num_supernodes=num_supernodes, num_cpus_per_client=cpus,
                        verbose=verbose, on_round=on_round)

    return run


def write_manifest(out: Path, cells: Sequence[Cell], base: Mapping[str, Any],
                   grids: Sequence[Grid], num_supernodes: int) -> None:
    """Write ``sweep.json``: the base, the grids and each cell's name and grid values."""
    manifest = {"base": dict(base), "grids": [{k: list(v) for k, v in g.items()} for g in grids],
                "num_supernodes": num_supernodes,
                "cells": [{"name": c.name, "overrides": c.overrides} for c in cells]}
    (out / reports.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def resumable_round(cell: Cell, cell_dir: Path) -> int | None:
    """The round an interrupted cell can continue after, or None (no usable checkpoint)."""
    try:
        checkpoint = load_checkpoint(cell_dir)
    except CheckpointError:
        return None
    if checkpoint is None:
        return None
    # The same test the resumed run applies, so the sweep never resumes what it would refuse
    errors = resume_errors(checkpoint, parse_run_config(cell.run_config))
    return None if errors else checkpoint.server_round


def run_cell(cell: Cell, cell_dir: Path, runner: CellRunner, num_supernodes: int,
             on_round: RoundCallback, share_prefix: bool = True) -> Path:
    """Run one cell (continuing an interrupted one) and check it finished where expected.

    With ``share_prefix``, a new cell whose rounds before the attack another cell
    of the sweep has run starts after them (:mod:`~fl_app.experiments.sweep.prefix`).

    Raises:
        SweepError: The runner wrote elsewhere or left the run unfinished.
    """
    run_config = cell.run_config
    out = cell_dir.parent
    if cell_dir.exists():
        if resumable_round(cell, cell_dir) is not None:
            run_config = {**run_config, "resume": True}
        else:
            shutil.rmtree(cell_dir)  # nothing to continue from: start over cleanly
    if share_prefix and not cell_dir.exists() and start_from_prefix(run_config, out, cell_dir):
        run_config = {**run_config, "resume": True}
    if share_prefix:
        on_round = keeping_prefix(run_config, out, cell_dir, on_round)
    run_dir = Path(runner(run_config, num_supernodes, on_round)).resolve()
    if run_dir != cell_dir.resolve():
        raise SweepError(f"cell {cell.name!r} was written to {run_dir}, not {cell_dir}")
    if cell_state(cell, cell_dir) != "finished":
        raise SweepError(f"cell {cell.name!r} did not finish; see {cell_dir}")
    return run_dir


def sweep_preset(overrides: Mapping[str, Any], preset: str | Path | None,
                 grids: Sequence[Grid]) -> tuple[dict[str, Any], str | Path | None]:
    """Return ``overrides`` without a ``preset`` key, and the sweep's one preset.

    ``--set preset=NAME`` means ``--preset NAME``: the sweep applies it itself, so
    every ``--set`` and grid value beats the preset exactly (a run given the
    ``preset`` key can only tell a key left at its default, see
    :func:`fl_app.config.apply_preset`).
    """
    rest = dict(overrides)
    given = rest.pop(KEY_PRESET, None)
    errors = [ConfigError(KEY_PRESET, g[KEY_PRESET], "one preset for the whole sweep",
                          "Use --preset NAME (or --set preset=NAME); run one sweep per preset.")
              for g in grids if KEY_PRESET in g]
    if given is not None and preset is not None and str(given) != str(preset):
        errors.append(ConfigError(KEY_PRESET, given, f"the same as --preset {preset}",
                                  "Give the preset once."))
    if errors:
        raise ConfigErrors(errors)
    return rest, (preset if preset is not None else given) or None


def prepare_cells(out: Path, base: Mapping[str, Any], grids: Sequence[Grid],
                  overrides: Mapping[str, Any], num_supernodes: int) -> list[Cell]:
    """Plan the cells and check everything that can be checked before running any.

    Raises:
        ConfigErrors: A bad grid, override or federation size, or an invalid cell.
        SweepError: A cell folder holds a finished run of another configuration.
    """
    errors = [ConfigError(k, overrides[k], "set either as an override or in the grid, not both")
              for g in grids for k in g if k in overrides]
    if num_supernodes < 1:
        errors.append(ConfigError("--num-supernodes", num_supernodes, "an integer >= 1"))
    if errors:
        raise ConfigErrors(errors)
    cells = plan_cells(out, base, grids)
    validate_cells(cells, num_supernodes)
    check_no_changed_cells(out, cells)
    return cells


def run_sweep(out: str | Path, grid: Grid | Sequence[Grid] | None = None,
              overrides: Mapping[str, Any] | None = None, preset: str | Path | None = None,
              num_supernodes: int = DEFAULT_NUM_SUPERNODES, *,
              runner: CellRunner | None = None, progress: SweepProgress | None = None,
              num_cpus_per_client: float | None = None, verbose: bool = False,
              dry_run: bool = False, jobs: int = 1, share_prefix: bool = True) -> SweepResult:
    """Run every cell of the grid(s) that is not already finished, then write the reports.

    Args:
        out: The sweep folder; each cell writes ``out/<cell name>/``.
        grid: ``{key: [values]}``, or a list of them (the sweep is the union of their
            products). ``None``: one cell, ``base``.
        overrides: Run-config overrides of every cell, on top of ``preset``.
        preset: A TOML file of run-config overrides, or a shipped preset's name.
        num_supernodes: Simulated nodes per run.
        runner: Runs one cell (default :func:`simulate_runner`); tests pass a fake.
        progress: Where progress goes (default :func:`make_progress`).
        num_cpus_per_client: Ray CPUs per client (default: that of
            :mod:`fl_app.experiments.simulate`).
        verbose: Keep Flower's INFO logs and Ray's verbose logging.
        dry_run: Validate and print the plan, run nothing.
        jobs: Cells run at once, each job in its own process with its share of the
            cores (:mod:`~fl_app.experiments.sweep.parallel`); with ``jobs > 1`` a
            given ``runner`` must be picklable.
        share_prefix: Cells that differ only in the attack run the rounds before it
            once (:mod:`~fl_app.experiments.sweep.prefix`); False runs every cell from
            round 0 (e.g. to measure what sharing saves).

    Returns:
        What ran, what was skipped, what failed, and the report files.

    Raises:
        ConfigErrors: Any cell's configuration is invalid (nothing has run).
        SweepError: A cell folder holds a finished run of another configuration.
    """
    out = Path(out).expanduser().resolve()
    grids = [] if grid is None else [grid] if isinstance(grid, Mapping) else list(grid)
    overrides, preset = sweep_preset(overrides or {}, preset, grids)
    base = with_sweep_tracking({**(load_preset(preset, "--preset") if preset else {}),
                                **overrides}, grids, out)
    cells = prepare_cells(out, base, grids, overrides, num_supernodes)
    share = cores_per_job(jobs, DEFAULT_CLIENT_CPUS if num_cpus_per_client is None
                          else num_cpus_per_client)  # a bad --jobs fails before anything runs
    result = SweepResult(out)
    progress = progress or make_progress(len(cells), plain=verbose)
    if dry_run:
        say_plan(out, cells, progress)
        return result
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, cells, base, grids, num_supernodes)
    # reports read every cell and redraw every figure: at most a tenth of the sweep's time
    refresh = Throttle(lambda: reports.write_reports(out))
    with progress, quiet_flower(not verbose):
        if jobs == 1:
            run_in_this_process(cells, out, runner or simulate_runner(num_cpus_per_client,
                                                                      verbose),
                                num_supernodes, progress, result, refresh, share_prefix)
        else:
            todo = [(k, cell) for k, cell in enumerate(cells, 1)
                    if not skipped(k, cell, out, progress, result)]
            run_cells_in_jobs(todo, out, num_supernodes, jobs, share, progress, result,
                              refresh, runner=runner, num_cpus_per_client=num_cpus_per_client,
                              verbose=verbose, share_prefix=share_prefix)
    result.reports = reports.write_reports(out)
    return result


def with_sweep_tracking(base: dict[str, Any], grids: Sequence[Grid], out: Path
                        ) -> dict[str, Any]:
    """A sweep's cells share one tracker store and experiment (unless the user set them).

    With a ``tracker`` set (in the base or a grid), ``tracker-dir`` defaults to
    ``<out>/tracking`` (one MLflow database, one TensorBoard parent folder with a
    sub-folder per cell) and ``tracker-experiment`` to the sweep folder's name.
    """
    trackers = {base.get("tracker", "none")} | {v for g in grids for v in g.get("tracker", [])}
    if trackers == {"none"}:
        return base
    return {"tracker-dir": str(out / "tracking"), "tracker-experiment": out.name, **base}


def run_in_this_process(cells: Sequence[Cell], out: Path, runner: CellRunner,
                        num_supernodes: int, progress: SweepProgress,
                        result: SweepResult, after_cell: Callable[[], None],
                        share_prefix: bool = True) -> None:
    """Run the cells one after the other here, all on one Ray instance and its actors."""
    with shared_ray():
        for k, cell in enumerate(cells, 1):
            if run_or_skip(k, cell, out, runner, num_supernodes, progress, result,
                           share_prefix):
                after_cell()


def skipped(k: int, cell: Cell, out: Path, progress: SweepProgress,
            result: SweepResult) -> bool:
    """Whether cell ``k`` finished earlier with this configuration (then it is skipped)."""
    if cell_state(cell, out / cell.name) != "finished":
        return False
    result.skipped.append(cell.name)
    progress.cell_done(k, cell, "skipped (finished earlier)")
    return True


def say_plan(out: Path, cells: Sequence[Cell], progress: SweepProgress) -> None:
    """``--dry-run``: each cell and where it stands (new, finished, interrupted, ...)."""
    for k, cell in enumerate(cells, 1):
        state = cell_state(cell, out / cell.name)
        done = resumable_round(cell, out / cell.name) if state == "interrupted" else None
        if done is not None:
            state += f", resumes after round {done}"
        progress.say(f"cell {k}/{len(cells)} {cell.name}: {state}")


def run_or_skip(k: int, cell: Cell, out: Path, runner: CellRunner, num_supernodes: int,
                progress: SweepProgress, result: SweepResult, share_prefix: bool = True) -> bool:
    """Run cell ``k`` unless it finished earlier; a failure is recorded, not raised.

    Returns whether the cell ran and finished.
    """
    cell_dir = out / cell.name
    if skipped(k, cell, out, progress, result):
        return False
    progress.cell_started(k, cell, parse_run_config(cell.run_config).num_server_rounds)
    if (done := resumable_round(cell, cell_dir)) is not None:
        progress.say(f"cell {k}/{progress.total} {cell.name}: resuming after round {done}")
    started = time.time()
    try:
        run_cell(cell, cell_dir, runner, num_supernodes, progress.round_done, share_prefix)
    except Exception as exc:  # one broken cell must not lose the others
        result.failed[cell.name] = f"{type(exc).__name__}: {exc}"
        progress.cell_done(k, cell, f"failed: {type(exc).__name__}: {exc}")
        return False
    result.ran.append(cell.name)
    progress.cell_done(k, cell, f"finished in {time.time() - started:.0f} s")
    return True
