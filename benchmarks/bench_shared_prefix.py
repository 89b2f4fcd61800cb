"""What sharing the rounds before the attack saves a sweep: the same cells with and without.

A sweep of cells that differ only in the attack (the matrix's attacks against one
aggregator, the attack starting at round ``--start`` of ``--rounds``) runs twice in
fresh folders, on one Ray instance: without ``share_prefix`` first (every cell from
round 0, ``--no-shared-prefix``; it pays Ray's start-up), then with it (the default of
``fl-sweep``: rounds ``1 .. start - 1`` once for the group). It prints each sweep's
wall time, the rounds it ran, and whether every cell's accuracy per round came out the
same both ways.

    python benchmarks/bench_shared_prefix.py [--rounds 10] [--start 6] [--jobs 1] [--attacks ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fl_app.experiments import reports
from fl_app.experiments.engine import shared_ray
from fl_app.experiments.sweep import run_sweep, simulate_runner
from fl_app.experiments.sweep.progress import SweepProgress

ATTACKS = ("ipm", "alie", "sign-flip", "gaussian", "min-max", "min-sum", "mimic",
           "fang-trimmed-mean")


def timed_sweep(out: Path, config: dict, grid: dict, num_supernodes: int, share: bool,
                jobs: int) -> tuple[float, int]:
    """Run the sweep in ``out``; return (wall seconds, rounds run)."""
    rounds = []
    real = simulate_runner()

    def counting(run_config, n, on_round):  # counts the rounds each cell really runs
        return real(run_config, n, lambda row: (rounds.append(row["round"]), on_round(row)))

    progress = SweepProgress(len(grid["attack"]))
    progress.say = lambda line: None
    started = time.perf_counter()
    result = run_sweep(out, grid, config, num_supernodes=num_supernodes, progress=progress,
                       runner=counting if jobs == 1 else None, jobs=jobs, share_prefix=share)
    if result.failed:
        raise SystemExit(f"cells failed: {result.failed}")
    return time.perf_counter() - started, len([r for r in rounds if r > 0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--start", type=int, default=6, help="attack-start-round")
    parser.add_argument("--num-supernodes", type=int, default=15)
    parser.add_argument("--strategy", default="median")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS))
    args = parser.parse_args()
    config = {"dataset": "digits", "num-server-rounds": args.rounds, "fraction-fit": 1.0,
              "learning-rate": 0.05, "num-attackers": 3, "num-byzantine": -1,
              "attack-knowledge": "colluders", "attack-start-round": args.start,
              "strategy": args.strategy}
    grid = {"attack": list(args.attacks)}
    # One Ray for both sweeps (the first, run without sharing, pays its start-up: a
    # handicap for the default, not for the comparison's baseline).
    with tempfile.TemporaryDirectory() as tmp, shared_ray():
        rows, curves = [], {}
        for share in (False, True):
            out = Path(tmp) / ("shared" if share else "alone")
            seconds, rounds = timed_sweep(out, config, grid, args.num_supernodes, share,
                                          args.jobs)
            rows.append((share, seconds, rounds))
            curves[share] = {c.name: [r["test_accuracy"] for r in c.rounds]
                             for c in reports.load_cells(out)[0]}
    print(f"{len(args.attacks)} cells ({args.strategy}, attacks {', '.join(args.attacks)}), "
          f"digits, {args.num_supernodes} clients, {args.rounds} rounds, attack from round "
          f"{args.start}, --jobs {args.jobs}")
    print(f"{'rounds before the attack':<32} {'wall s':>8} {'rounds run':>11}")
    for share, seconds, rounds in rows:
        label = "shared (default)" if share else "each cell (--no-shared-prefix)"
        print(f"{label:<32} {seconds:8.1f} {rounds if args.jobs == 1 else '-':>11}")
    print(f"saved {1 - rows[1][1] / rows[0][1]:.0%} of the wall time; every cell's accuracy "
          f"per round identical: {curves[True] == curves[False]}")


if __name__ == "__main__":
    main()
