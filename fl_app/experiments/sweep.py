r"""Run a grid of simulations in this process: one result folder per cell, resumable, reported.

A sweep is a base configuration (a preset: a TOML file of run-config overrides,
plus ``--set`` overrides) and one or more grids (``--grid KEY=V1,V2,...``); each
cell of the grids' Cartesian products is one in-process run of
:func:`fl_app.experiments.simulate.simulate`, written to ``<out>/<cell name>/``, a name made
from the cell's grid values in the order the grid gives them, e.g.
``num-attackers=3,strategy=krum``::

    fl-sweep --preset fl_app/config/presets/seed-krum-ipm.toml --set data-dir=/data/cifar10-jpeg \
        --grid num-attackers=1,2,3 strategy=fedavg,krum --num-supernodes 100 \
        --out ~/fl-sweeps/seed

Every cell is validated (:func:`fl_app.config.parse_run_config` and the checks
that need the federation's size) before anything runs, and all errors are
reported together. Re-running the same command resumes: a cell whose
``summary.json`` says ``finished`` with the same configuration is skipped; a cell
left by an interrupted run continues from its last checkpointed round
(``resume = true``, :mod:`fl_app.runs.checkpoint`), and one without a usable
checkpoint is deleted and starts over cleanly. A cell
that finished with a *different* configuration is never overwritten: the sweep
stops before running anything and says so.

A cell runs exactly what ``flwr run`` runs with the same run config (same
ServerApp, ClientApp and seeds), so its numbers are the same. The reports
(``sweep.csv`` and plots, :mod:`fl_app.experiments.reports`) are rewritten beside the cells
after every cell; ``fl-sweep --report-only --out DIR`` regenerates them.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fl_app.config import KEYS, PLACEMENT_KEYS, parse_run_config
from fl_app.config.preset import KEY_PRESET, load_preset, preset_names
from fl_app.errors import ConfigError, ConfigErrors, FLAppError
from fl_app.experiments import reports
from fl_app.federation.checks import federation_errors
from fl_app.runs.checkpoint import CheckpointError, load_checkpoint, resume_errors

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (tomli is a Flower dependency)
    import tomli as tomllib

_NAMES_FOLDERS = "The sweep names each cell's folder: use --out."
# The placement keys are set per cell by the sweep; why a user cannot set them
SWEEP_OWNED_KEYS = {key: {"resume": "The sweep resumes interrupted cells itself: run the "
                                    "same command again."}.get(key, _NAMES_FOLDERS)
                    for key in PLACEMENT_KEYS}
BASE_CELL_NAME = "base"  # the one cell of a sweep without a grid
DEFAULT_NUM_SUPERNODES = 10

Grid = Mapping[str, Sequence[Any]]
RoundCallback = Callable[[dict[str, Any]], None]


class SweepError(FLAppError, RuntimeError):
    """A sweep that cannot run as asked (e.g. its folder holds other results)."""


class CellRunner(Protocol):
    """Runs one cell and returns its result folder (default: :func:`simulate_runner`)."""

    def __call__(self, run_config: Mapping[str, Any], num_supernodes: int,
                 on_round: RoundCallback) -> Path:
        """Run ``run_config`` on ``num_supernodes`` nodes; call ``on_round`` per rounds.csv row."""
        ...


@dataclass(frozen=True)
class Cell:
    """One run of a sweep.

    Attributes:
        name: The folder name, from the grid values (``num-attackers=3,strategy=krum``).
        overrides: The cell's grid values, in the grid's key order.
        run_config: Everything the run is given: preset, ``--set``, grid values,
            ``output-dir`` and ``run-name``.
    """

    name: str
    overrides: dict[str, Any]
    run_config: dict[str, Any]


@dataclass
class SweepResult:
    """What a sweep did.

    Attributes:
        out: The sweep folder.
        ran: Names of the cells run now.
        skipped: Names of the cells found finished with the same configuration.
        failed: Name -> error message of the cells that raised.
        reports: The report files written (see :func:`fl_app.experiments.reports.write_reports`).
    """

    out: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    reports: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------------------- values


def parse_value(text: str) -> Any:
    """Parse one command-line value as a TOML value; anything else is a bare string.

    >>> [parse_value(t) for t in ("3", "0.1", "true", "'krum'", '"a b"', "krum", "/x/y")]
    [3, 0.1, True, 'krum', 'a b', 'krum', '/x/y']
    """
    text = text.strip()
    if "\n" in text:
        return text
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    # dates, arrays and tables are not run-config values: keep what was typed
    return value if isinstance(value, (bool, int, float, str)) else text


def split_values(text: str) -> list[str]:
    """Split ``V1,V2,...`` at the commas outside quotes.

    >>> split_values("fedavg,krum")
    ['fedavg', 'krum']
    >>> split_values("'a,b', 'c'")
    ["'a,b'", " 'c'"]
    """
    items, current, quote = [], [], ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ",":
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return items


def split_assignment(arg: str, option: str) -> tuple[str, str]:
    """Split ``KEY=VALUE`` (the value may contain ``=``), or name the option and the form."""
    key, sep, value = arg.partition("=")
    if not sep or not key.strip():
        form = "KEY=V1,V2,..." if option == "--grid" else "KEY=VALUE"
        raise ConfigError(option, arg, form)
    return key.strip(), value


def format_value(value: Any) -> str:
    """Write a value as in a cell name: TOML's ``true``/``false``, numbers and bare strings.

    >>> [format_value(v) for v in (True, 3, 0.1, 1.0, "krum")]
    ['true', '3', '0.1', '1.0', 'krum']
    """
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """Parse ``--set KEY=VALUE`` arguments (each value one TOML value or bare string)."""
    out: dict[str, Any] = {}
    for arg in args:
        key, text = split_assignment(arg, "--set")
        out[key] = parse_value(text)
    return out


def parse_grid(args: Sequence[str]) -> dict[str, list[Any]]:
    """Parse one ``--grid KEY=V1,V2,... KEY=...`` into ``{key: [values]}``, in order.

    >>> parse_grid(["num-attackers=1,3", "strategy=fedavg,krum"])
    {'num-attackers': [1, 3], 'strategy': ['fedavg', 'krum']}
    """
    grid: dict[str, list[Any]] = {}
    errors = []
    for arg in args:
        key, text = split_assignment(arg, "--grid")
        items = split_values(text)
        if key in grid:
            errors.append(ConfigError(key, text, "one --grid entry per key",
                                      f"It is already given as {grid[key]!r}."))
        elif any(not item.strip() for item in items):
            errors.append(ConfigError(key, text, "a comma-separated list of values",
                                      "An empty value is not allowed."))
        else:
            grid[key] = [parse_value(item) for item in items]
    if errors:
        raise ConfigErrors(errors)
    return grid


# ---------------------------------------------------------------------------- the grid


def expand_grid(grids: Sequence[Grid]) -> list[dict[str, Any]]:
    """Cells of the union of the grids' Cartesian products, in order, duplicates once.

    Within a grid the last key varies fastest (``itertools.product``).

    >>> expand_grid([{"q": [1, 2], "strategy": ["fedavg", "krum"]}])
    [{'q': 1, 'strategy': 'fedavg'}, {'q': 1, 'strategy': 'krum'}, \
{'q': 2, 'strategy': 'fedavg'}, {'q': 2, 'strategy': 'krum'}]
    >>> expand_grid([])
    [{}]
    """
    cells: list[dict[str, Any]] = []
    for grid in grids or [{}]:
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            cell = dict(zip(keys, values, strict=True))
            if cell not in cells:
                cells.append(cell)
    return cells


def cell_name(overrides: Mapping[str, Any]) -> str:
    """The folder name of a cell: ``key=value`` joined by commas, in the grid's order.

    Path separators in values become ``_``; a cell without grid values is ``base``.

    >>> cell_name({"num-attackers": 3, "strategy": "krum"})
    'num-attackers=3,strategy=krum'
    >>> cell_name({})
    'base'
    """
    if not overrides:
        return BASE_CELL_NAME
    name = ",".join(f"{k}={format_value(v)}" for k, v in overrides.items())
    return name.replace("/", "_").replace("\\", "_")


def plan_cells(out: Path, base: Mapping[str, Any], grids: Sequence[Grid]) -> list[Cell]:
    """The sweep's cells: ``base`` plus each cell's grid values, writing to ``out/<name>``.

    Grids may overlap: a cell with the same settings as an earlier one (e.g.
    ``ipm-epsilon=1.0,num-attackers=3`` when the base already has ``ipm-epsilon =
    1.0`` and another grid makes ``num-attackers=3``) runs once, under the first name.

    Raises:
        ConfigErrors: A key the sweep sets itself, a grid key without values, or two
            cells with different settings and the same folder name.
    """
    errors = [ConfigError(key, base[key], "not set in a sweep", why)
              for key, why in SWEEP_OWNED_KEYS.items() if key in base]
    errors += [ConfigError(key, list(grid[key]), "not swept", why)
               for grid in grids for key, why in SWEEP_OWNED_KEYS.items() if key in grid]
    errors += [ConfigError(key, list(grid[key]), "at least one value") for grid in grids
               for key in grid if not list(grid[key])]
    if errors:
        raise ConfigErrors(errors)
    cells: dict[str, Cell] = {}
    for overrides in expand_grid(grids):
        name = cell_name(overrides)
        settings = {**base, **overrides}
        if any(comparable_config(c.run_config) == settings for c in cells.values()):
            continue  # the same run under another name (grids that overlap): run it once
        if name in cells:
            errors.append(ConfigError("--grid", name, "distinct cell names",
                                      "Two cells with different settings would share "
                                      "this folder."))
        cells.setdefault(name, Cell(name, dict(overrides),
                                    {**settings, "output-dir": str(out), "run-name": name}))
    if errors:
        raise ConfigErrors(errors)
    return list(cells.values())


# ---------------------------------------------------------------------------- validation


def _hint_of(error: ConfigError) -> str:
    """The hint part of a :class:`ConfigError`'s message (what follows 'expected ...')."""
    return str(error)[len(str(ConfigError(error.key, error.value, error.allowed))):].strip()


def validate_cells(cells: Sequence[Cell], num_supernodes: int) -> None:
    """Validate every cell as its run would, and report all errors together.

    An error found in some cells only names them (the first three).

    Raises:
        ConfigErrors: Every distinct error of every cell.
    """
    found: dict[tuple[str, str, str, str], tuple[ConfigError, list[str]]] = {}
    for cell in cells:
        try:
            cfg = parse_run_config(cell.run_config)
        except ConfigErrors as exc:
            cell_errors = exc.errors
        else:
            cell_errors = federation_errors(cfg, num_supernodes, simulated=True)
        for error in cell_errors:
            key = (error.key, repr(error.value), error.allowed, _hint_of(error))
            found.setdefault(key, (error, []))[1].append(cell.name)
    errors = []
    for error, names in found.values():
        if len(names) == len(cells):
            errors.append(error)
            continue
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        where = f"(in cell(s) {', '.join(names[:3])}{more})"
        errors.append(ConfigError(error.key, error.value, error.allowed,
                                  f"{_hint_of(error)} {where}".strip()))
    if errors:
        raise ConfigErrors(errors)


# ---------------------------------------------------------------------------- resume


def comparable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved config without the keys that only say where it was written."""
    return {k: v for k, v in config.items() if k not in SWEEP_OWNED_KEYS}


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


# ---------------------------------------------------------------------------- progress


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


# ---------------------------------------------------------------------------- running


def simulate_runner(num_cpus_per_client: float | None = None, verbose: bool = False
                    ) -> CellRunner:
    """The default :class:`CellRunner`: :func:`~fl_app.experiments.simulate.simulate` here."""
    from fl_app.experiments.simulate import DEFAULT_CLIENT_CPUS, simulate

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
             on_round: RoundCallback) -> Path:
    """Run one cell (continuing an interrupted one) and check it finished where expected.

    Raises:
        SweepError: The runner wrote elsewhere or left the run unfinished.
    """
    run_config = cell.run_config
    if cell_dir.exists():
        if resumable_round(cell, cell_dir) is not None:
            run_config = {**run_config, "resume": True}
        else:
            shutil.rmtree(cell_dir)  # nothing to continue from: start over cleanly
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
              dry_run: bool = False) -> SweepResult:
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

    Returns:
        What ran, what was skipped, what failed, and the report files.

    Raises:
        ConfigErrors: Any cell's configuration is invalid (nothing has run).
        SweepError: A cell folder holds a finished run of another configuration.
    """
    out = Path(out).expanduser().resolve()
    grids = [] if grid is None else [grid] if isinstance(grid, Mapping) else list(grid)
    overrides, preset = sweep_preset(overrides or {}, preset, grids)
    base = {**(load_preset(preset, "--preset") if preset else {}), **overrides}
    cells = prepare_cells(out, base, grids, overrides, num_supernodes)
    result = SweepResult(out)
    progress = progress or make_progress(len(cells), plain=verbose)
    if dry_run:
        for k, cell in enumerate(cells, 1):
            state = cell_state(cell, out / cell.name)
            done = resumable_round(cell, out / cell.name) if state == "interrupted" else None
            if done is not None:
                state += f", resumes after round {done}"
            progress.say(f"cell {k}/{len(cells)} {cell.name}: {state}")
        return result
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, cells, base, grids, num_supernodes)
    runner = runner or simulate_runner(num_cpus_per_client, verbose)
    with progress, quiet_flower(not verbose):
        for k, cell in enumerate(cells, 1):
            cell_dir = out / cell.name
            if cell_state(cell, cell_dir) == "finished":
                result.skipped.append(cell.name)
                progress.cell_done(k, cell, "skipped (finished earlier)")
                continue
            progress.cell_started(k, cell, parse_run_config(cell.run_config).num_server_rounds)
            if (done := resumable_round(cell, cell_dir)) is not None:
                progress.say(f"cell {k}/{len(cells)} {cell.name}: resuming after round {done}")
            started = time.time()
            try:
                run_cell(cell, cell_dir, runner, num_supernodes, progress.round_done)
            except Exception as exc:  # one broken cell must not lose the others
                result.failed[cell.name] = f"{type(exc).__name__}: {exc}"
                progress.cell_done(k, cell, f"failed: {type(exc).__name__}: {exc}")
                continue
            result.ran.append(cell.name)
            progress.cell_done(k, cell, f"finished in {time.time() - started:.0f} s")
            reports.write_reports(out)
    result.reports = reports.write_reports(out)
    return result


# ---------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The ``fl-sweep`` command line."""
    parser = argparse.ArgumentParser(
        prog="fl-sweep",
        description="Run a grid of in-process simulations (one result folder per cell, "
                    "resumable) and write sweep.csv and plots beside the cells.",
        epilog="Values are TOML values (3, 0.1, true, 'krum') or bare strings (krum, /data). "
               "Example: fl-sweep --preset seed-krum-ipm-small "
               "--grid num-attackers=1,2,3 strategy=fedavg,krum --out ~/fl-sweeps/small")
    parser.add_argument("--preset", help="TOML file of run-config overrides, or a shipped "
                        f"preset's name ({', '.join(preset_names())})")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                        metavar="KEY=VALUE", help="run-config override of every cell")
    parser.add_argument("--grid", dest="grids", nargs="+", action="append", default=[],
                        metavar="KEY=V1,V2", help="keys to sweep (Cartesian product); repeat "
                        "--grid for a union of products")
    parser.add_argument("--num-supernodes", type=int, default=DEFAULT_NUM_SUPERNODES,
                        help="simulated nodes per run (default %(default)s)")
    parser.add_argument("--num-cpus-per-client", type=float, default=None,
                        help="Ray CPUs per client (default 1)")
    parser.add_argument("--out", required=True, help="the sweep folder")
    parser.add_argument("--report-only", action="store_true",
                        help="only regenerate sweep.csv and plots from the cell folders")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and list the cells and their state; run nothing")
    parser.add_argument("--verbose", action="store_true",
                        help="plain progress lines and Flower's INFO logs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fl-sweep``; returns the exit status (0 ok, 1 a cell failed, 2 bad input)."""
    args = build_parser().parse_args(argv)
    try:
        if args.report_only:
            written = reports.write_reports(Path(args.out).expanduser().resolve())
            if not written:
                raise SweepError(f"no finished cells in {args.out}")
        else:
            result = run_sweep(args.out, [parse_grid(g) for g in args.grids],
                               parse_overrides(args.overrides), args.preset,
                               args.num_supernodes, num_cpus_per_client=args.num_cpus_per_client,
                               verbose=args.verbose, dry_run=args.dry_run)
            written = result.reports
            for name, why in result.failed.items():
                print(f"[fl-sweep] FAILED {name}: {why}", file=sys.stderr)
            if result.failed:
                return 1
    except (ConfigError, ConfigErrors, SweepError) as exc:
        print(f"fl-sweep: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"[fl-sweep] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
