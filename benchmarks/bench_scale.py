"""Scale: start time, peak memory and seconds per round as the federation grows to 10,000 nodes.

Each size runs the offline default (digits, FedAvg, one local epoch, batch 10), or
``--dataset cifar10 --data-dir ...`` (50,000 training images: enough for 10,000
nodes), as a Flower simulation with ``--clients`` clients sampled per round, in a child
process of its own (a fresh Ray instance), while this process samples the
memory of the child's whole process tree (driver, Ray daemons, actors) every
``--interval`` seconds with psutil:

* **PSS**: proportional set size summed over the tree, i.e. shared pages (torch's
  libraries, Ray's object store) counted once, split between the processes
  that map them. This is the memory the run takes from the machine.
* **RSS**: resident set size summed over the tree; counts shared pages once per
  process, so it overstates (an upper bound).

Seconds per round come from the run's rounds.csv: the median of rounds 2..R
(round 1 also pays for the actors' first imports and partitioning); "start" is the
wall time until round 1 begins: until the ServerApp logs the federation check
(``[fl_app] N simulated nodes, ...``), after Ray, the initial model's evaluation
(round 0) and the start checks, which partition the data once.

Goals (issues): 1000 partitions with 100 clients a round run within 24 GiB; at
10,000 nodes, start at most 60 s, the whole process tree at most 4 GiB (PSS), and
seconds per round at most 1.5x the 1000-node figure (when both are in one run).

Usage::

    python benchmarks/bench_scale.py                      # 100, 300, 1000 nodes, 5 rounds
    python benchmarks/bench_scale.py --nodes 1000 --rounds 3 --strategy krum
    python benchmarks/bench_scale.py --dataset cifar10 --data-dir ../shared/data/cifar10-jpeg \
        --nodes 1000 10000
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

GOAL_BYTES = 24 * 2**30
GOAL_10K_BYTES = 4 * 2**30
GOAL_10K_START_S = 60.0
GOAL_ROUND_GROWTH = 1.5  # s/round at 10,000 nodes over the 1000-node figure
START_LINE = "simulated nodes,"  # the federation check's log line: round 1 begins
CHILD = """
import json, sys
from fl_app.experiments.simulate import simulate
overrides, nodes = json.loads(sys.argv[1]), int(sys.argv[2])
print(simulate(overrides, num_supernodes=nodes))
"""


@dataclass
class ScaleResult:
    """One federation size: its memory peaks and round times."""

    nodes: int
    sampled: int
    peak_pss: int
    peak_rss: int
    start_s: float
    round_s: list[float]  # rounds 1..R
    wall_s: float
    final_accuracy: float

    @property
    def steady_s(self) -> float:
        """Median seconds of rounds 2..R (round 1 when there is only one)."""
        return statistics.median(self.round_s[1:] or self.round_s)


def tree_memory(root: psutil.Process) -> tuple[int, int]:
    """(PSS, RSS) in bytes, summed over ``root`` and all its descendants."""
    pss = rss = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        pss += getattr(info, "pss", info.rss)
        rss += info.rss
    return pss, rss


def run_size(nodes: int, clients: int, args: argparse.Namespace, out: Path) -> ScaleResult:
    """Run one federation size in a child process and sample its memory until it exits."""
    # int(nodes * fraction) is Flower's sample size; the half keeps float error off it.
    overrides = {"num-server-rounds": args.rounds,
                 "fraction-fit": min((clients + 0.5) / nodes, 1.0),
                 "strategy": args.strategy, "output-dir": str(out), "run-name": f"nodes-{nodes}",
                 "seed": args.seed, "dataset": args.dataset}
    if args.data_dir:
        overrides["data-dir"] = str(Path(args.data_dir).expanduser().resolve())
    log_path = out / f"nodes-{nodes}.log"  # a file, not a pipe: a full pipe would block the run
    started = time.perf_counter()
    with log_path.open("w") as log:
        child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(overrides),
                                  str(nodes)], stdout=log, stderr=subprocess.STDOUT)
    root = psutil.Process(child.pid)
    peak_pss = peak_rss = 0
    start_s = None
    rounds_csv = out / f"nodes-{nodes}" / "rounds.csv"
    while child.poll() is None:
        pss, rss = tree_memory(root)
        peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
        if start_s is None and START_LINE in log_path.read_text(errors="replace"):
            start_s = time.perf_counter() - started
        time.sleep(args.interval)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"{nodes} nodes: the run failed ({child.returncode}):\n"
                           f"{log_path.read_text()[-3000:]}")
    with rounds_csv.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["round"]) >= 1]
    sampled = {int(r["num_clients"]) for r in rows}
    if sampled != {clients}:
        raise RuntimeError(f"{nodes} nodes: rounds had {sampled} clients, not {clients}")
    return ScaleResult(nodes, clients, peak_pss, peak_rss, start_s or wall,
                       [float(r["seconds"]) for r in rows], wall,
                       float(rows[-1]["test_accuracy"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--clients", type=int, default=100, help="clients sampled per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--strategy", default="fedavg")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default="", help="an ImageFolder copy (cifar10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interval", type=float, default=0.5, help="memory sampling, s")
    args = parser.parse_args()

    gib = 2**30
    print(f"{args.dataset}, {args.strategy}, {args.clients} clients a round, {args.rounds} "
          f"rounds; {os.cpu_count()} CPUs, {psutil.virtual_memory().total / gib:.1f} GiB; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"{'nodes':>6} {'peak PSS GiB':>12} {'peak RSS GiB':>12} {'start s':>8} "
          f"{'s/round':>8} {'round 1 s':>9} {'wall s':>7} {'accuracy':>8}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for nodes in args.nodes:
            r = results[nodes] = run_size(nodes, min(args.clients, nodes), args, Path(tmp))
            print(f"{r.nodes:>6} {r.peak_pss / gib:>12.2f} {r.peak_rss / gib:>12.2f} "
                  f"{r.start_s:>8.1f} {r.steady_s:>8.2f} {r.round_s[0]:>9.2f} "
                  f"{r.wall_s:>7.1f} {r.final_accuracy:>8.4f}", flush=True)
            status = "within" if r.peak_pss <= GOAL_BYTES else "OVER"
            print(f"       {status} the 24 GiB goal", flush=True)
    for line in goals(results):
        print(line)
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")


def goals(results: dict[int, ScaleResult]) -> list[str]:
    """The 10,000-node goals, for the sizes measured (>= 10,000 nodes)."""
    lines = []
    for nodes, r in sorted(results.items()):
        if nodes < 10_000:
            continue
        lines.append(f"goal: start at {nodes} nodes {r.start_s:.1f} s <= {GOAL_10K_START_S:.0f} s: "
                     f"{'met' if r.start_s <= GOAL_10K_START_S else 'MISSED'}")
        lines.append(f"goal: peak PSS at {nodes} nodes {r.peak_pss / 2**30:.2f} GiB <= 4 GiB: "
                     f"{'met' if r.peak_pss <= GOAL_10K_BYTES else 'MISSED'}")
        if 1000 in results:
            growth = r.steady_s / results[1000].steady_s
            lines.append(f"goal: s/round at {nodes} nodes {growth:.2f}x the 1000-node figure "
                         f"<= {GOAL_ROUND_GROWTH}x: "
                         f"{'met' if growth <= GOAL_ROUND_GROWTH else 'MISSED'}")
    return lines


if __name__ == "__main__":
    main()
