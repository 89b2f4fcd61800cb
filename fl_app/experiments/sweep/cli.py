"""``fl-sweep``: the command line of :func:`~fl_app.experiments.sweep.runner.run_sweep`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fl_app.config.preset import preset_names
from fl_app.errors import ConfigError, ConfigErrors
from fl_app.experiments import reports
from fl_app.experiments.sweep.cells import DEFAULT_NUM_SUPERNODES, SweepError
from fl_app.experiments.sweep.runner import run_sweep
from fl_app.experiments.sweep.values import parse_grid, parse_overrides


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
    parser.add_argument("--jobs", type=int, default=1,
                        help="cells run at once, each job a process with its share of the "
                             "cores and its own Ray instance (default 1)")
    parser.add_argument("--no-shared-prefix", dest="share_prefix", action="store_false",
                        help="run every cell from round 0, even the rounds before the attack "
                             "that cells differing only in the attack share (default: once)")
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
                               verbose=args.verbose, dry_run=args.dry_run, jobs=args.jobs,
                               share_prefix=args.share_prefix)
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
