"""A sweep's cells: the base and grids, the cells' names and run configs, their validation."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fl_app.config import PLACEMENT_KEYS, parse_run_config
from fl_app.errors import ConfigError, ConfigErrors, FLAppError
from fl_app.experiments.sweep.values import format_value
from fl_app.federation.checks import federation_errors

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


def comparable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved config without the keys that only say where it was written."""
    return {k: v for k, v in config.items() if k not in SWEEP_OWNED_KEYS}


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
