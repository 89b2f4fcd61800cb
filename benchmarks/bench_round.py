"""Seconds per federated round: our Flower simulation against a plain PyTorch loop.

Both ways run the seed's CIFAR-10 setting on the real data (100 IID partitions,
25 clients a round, batch 10, lr 0.01, momentum 0.5, one local epoch, cifar-cnn,
FedAvg) and do the same work each round:

1. **Flower**: :func:`fl_app.experiments.simulate.simulate` (Ray Simulation Engine, 100
   SuperNodes) with ``num_cpus_per_client`` CPUs and ``client-threads`` torch
   threads per client actor. Per-round seconds come from the run's rounds.csv.
2. **Plain loop**: in this process, for the partitions that the Flower run
   sampled in each round (rounds.csv ``sampled_clients``): decode the partition
   with :func:`fl_app.learning.data.load_partition` (the same function and per-process
   cache a client actor uses), build the model, load the global weights, train
   with :func:`fl_app.task.train` under the client's seeds, FedAvg the weights,
   and evaluate on the whole test set as the server does.

Data loading counts in both: every run starts with cold decode caches, so round 1
includes the first decodes everywhere, and later rounds decode the partitions a
process has not seen yet. Steady state is the median of rounds 2..R (round 1
also pays Ray's start-up). Round ``r`` is timed, in both ways, from the end of
evaluation ``r - 1`` to the end of evaluation ``r`` (as fl_app.runs.recorder does).

Goal (issue): Flower's default at most 0.75x the plain loop with 2 threads.

Usage::

    python benchmarks/bench_round.py              # CIFAR-10, 6 rounds, all configs
    python benchmarks/bench_round.py --quick      # digits, 3 rounds (smoke test)
    python benchmarks/bench_round.py --rounds 10 --skip flower-2cpu
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fl_app.client_app import derived_seed
from fl_app.config import RunConfig, parse_run_config
from fl_app.experiments.simulate import simulate
from fl_app.federation.roles import build_run_model
from fl_app.learning import data as fl_data
from fl_app.server_app import initial_weights
from fl_app.task import TrainSettings, evaluate, get_weights, set_weights, train
from strategies.mean import weighted_mean_update
from strategies.updates import flatten, stack_updates, unflatten

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "cifar10-jpeg"
NUM_PARTITIONS = 100
GOAL_RATIO = 0.75
BASELINE = "plain loop, 2 threads"
DEFAULT_FLOWER = "flower, 2 actors x 1 cpu, 1 thread"
OPTIONAL_CONFIGS = ("flower-2cpu", "plain-1thread")


@dataclass
class Timing:
    """Per-round seconds of one way of running the rounds, and its total wall time."""

    name: str
    seconds: list[float]  # rounds 1..R
    wall: float
    final_accuracy: float
    load: float  # 1-minute load average when the run started (other work skews timings)
    sampled: list[list[int]] = field(default_factory=list)

    @property
    def steady(self) -> float:
        """Median seconds of rounds 2..R (round 1 alone when there is only one)."""
        return statistics.median(self.seconds[1:] or self.seconds)


def seed_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The seed's setting as run-config overrides (dataset and rounds from ``args``)."""
    overrides: dict[str, object] = {
        "seed": args.seed, "num-server-rounds": args.rounds, "fraction-fit": 0.25,
        "fraction-evaluate": 0.0, "dataset": args.dataset, "model": "auto",
        "partitioning": "iid", "local-epochs": 1, "batch-size": 10, "learning-rate": 0.01,
        "momentum": 0.5, "strategy": "fedavg", "client-threads": 1,
    }
    if args.dataset != "digits":
        overrides["data-dir"] = str(Path(args.data_dir).expanduser().resolve())
    return overrides


def cold_caches(scratch: Path) -> None:
    """Forget every decoded partition, test set and file listing of this process.

    Also points the shared on-disk decode cache (fl_app.learning.data.decode_cache_dir) at an
    empty ``scratch/decode-cache`` (the previous way's ~600 MB deleted), inherited by
    the Ray workers a simulation starts, so each way decodes every JPEG it needs itself.
    """
    cache = scratch / "decode-cache"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    os.environ["FL_APP_CACHE_DIR"] = str(cache)
    for cached in (fl_data.load_partition, fl_data.load_test_set, fl_data.partition_indices,
                   fl_data._catalogue, fl_data._digits_arrays):
        cached.cache_clear()


def read_rounds(run_dir: Path) -> list[dict[str, str]]:
    """Rows of rounds.csv for rounds 1..R (round 0 is the initial model)."""
    with (run_dir / "rounds.csv").open(newline="") as f:
        return [row for row in csv.DictReader(f) if int(row["round"]) >= 1]


def run_flower(name: str, overrides: dict[str, object], cpus: int, threads: int,
               output_dir: Path, server_threads: int, scratch: Path) -> Timing:
    """Run the Flower simulation once; read its per-round seconds and sampled clients."""
    cold_caches(scratch)
    load = os.getloadavg()[0]
    torch.set_num_threads(server_threads)  # the ServerApp thread evaluates in this process
    run = {**overrides, "client-threads": threads, "output-dir": str(output_dir),
           "run-name": name.replace(" ", "").replace(",", "-")}
    start = time.perf_counter()
    run_dir = simulate(run, num_supernodes=NUM_PARTITIONS, num_cpus_per_client=cpus)
    wall = time.perf_counter() - start
    rows = read_rounds(run_dir)
    return Timing(name, [float(r["seconds"]) for r in rows], wall,
                  float(rows[-1]["test_accuracy"]), load,
                  [[int(p) for p in r["sampled_clients"].split(";")] for r in rows])


def run_plain(name: str, cfg: RunConfig, sampled: Sequence[Sequence[int]],
              threads: int, scratch: Path) -> Timing:
    """The same rounds as a sequential PyTorch loop in this process, ``threads`` torch threads."""
    cold_caches(scratch)
    load = os.getloadavg()[0]
    torch.set_num_threads(threads)
    settings = TrainSettings(cfg.local_epochs, cfg.batch_size, cfg.learning_rate, cfg.momentum)
    start = time.perf_counter()
    weights = initial_weights(cfg)
    x_test, y_test = fl_data.load_test_set(cfg.data)
    eval_model = build_run_model(cfg)
    set_weights(eval_model, weights)
    evaluate(eval_model, x_test, y_test)  # round 0, as the server does
    last, seconds, accuracy = time.perf_counter(), [], float("nan")
    for server_round, partitions in enumerate(sampled, start=1):
        results, counts = [], []
        for pid in partitions:  # what HonestClient.train_weights does for each client
            seed = derived_seed(cfg.seed, server_round, pid)
            torch.manual_seed(seed)
            model = build_run_model(cfg)
            set_weights(model, weights)
            x, y = fl_data.load_partition(cfg.data, pid, NUM_PARTITIONS)
            train(model, x, y, settings, torch.Generator().manual_seed(seed))
            results.append(get_weights(model))
            counts.append(len(y))
        update = weighted_mean_update(stack_updates(results, weights), counts)
        weights = unflatten(flatten(weights) + update, weights)
        set_weights(eval_model, weights)
        _, accuracy = evaluate(eval_model, x_test, y_test)
        now = time.perf_counter()
        seconds.append(now - last)
        last = now
    return Timing(name, seconds, time.perf_counter() - start, float(accuracy), load,
                  [list(p) for p in sampled])


def print_table(timings: list[Timing], rounds: int) -> bool:
    """Print the comparison; return whether Flower's default meets the goal."""
    base = next(t for t in timings if t.name == BASELINE).steady
    print(f"\nsteady state = median seconds of rounds 2..{rounds}; ratio vs {BASELINE}")
    header = (f"{'config':<38} {'s/round':>8} {'ratio':>6} {'total s':>8} {'final acc':>9}"
              f" {'load':>5}  per-round seconds")
    print(header)
    print("-" * len(header))
    for t in timings:
        rounds_s = " ".join(f"{s:.2f}" for s in t.seconds)
        print(f"{t.name:<38} {t.steady:>8.2f} {t.steady / base:>5.2f}x {t.wall:>8.1f} "
              f"{t.final_accuracy:>9.4f} {t.load:>5.1f}  {rounds_s}")
    ratio = next(t for t in timings if t.name == DEFAULT_FLOWER).steady / base
    met = ratio <= GOAL_RATIO
    cores = os.cpu_count() or 1
    if max(t.load for t in timings) > cores:
        print(f"warning: 1-minute load average above {cores} cores at the start of a run: "
              "other work was competing for the CPU and skews these timings")
    print(f"goal: {DEFAULT_FLOWER} <= {GOAL_RATIO:.2f}x {BASELINE}: "
          f"{'MET' if met else 'NOT MET'} ({ratio:.2f}x)")
    fastest = min((t for t in timings if t.name.startswith("plain")), key=lambda t: t.steady)
    flower = next(t for t in timings if t.name == DEFAULT_FLOWER)
    print(f"for reference: {DEFAULT_FLOWER} vs the fastest plain loop ({fastest.name}): "
          f"{flower.steady / fastest.steady:.2f}x")
    return met


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                        help="CIFAR-10 in ImageFolder layout (default: %(default)s)")
    parser.add_argument("--dataset", default="cifar10", choices=("cifar10", "digits"))
    parser.add_argument("--rounds", type=int, default=6, help="rounds per run (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: digits, 3 rounds")
    parser.add_argument("--skip", action="append", default=[], choices=OPTIONAL_CONFIGS,
                        help="leave out an optional config (repeatable)")
    parser.add_argument("--output-dir", default="",
                        help="where the Flower runs write their folders (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        args.dataset, args.rounds = "digits", 3
    if args.rounds < 2:
        parser.error("--rounds must be >= 2 (round 1 is start-up, not steady state)")
    if args.dataset != "digits" and not (Path(args.data_dir).expanduser() / "train").is_dir():
        parser.error(f"no CIFAR-10 at {args.data_dir} (expected <data-dir>/train/<class>/*.jpg)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every configuration, print the table; exit 0 when the goal is met."""
    args = parse_args(argv)
    overrides = seed_overrides(args)
    cfg = parse_run_config(overrides)
    server_threads = torch.get_num_threads()
    print(f"{cfg.dataset}: {NUM_PARTITIONS} partitions, fraction-fit {cfg.fraction_fit}, "
          f"batch {cfg.batch_size}, lr {cfg.learning_rate}, momentum {cfg.momentum}, "
          f"{cfg.model_name}, {cfg.strategy}, {args.rounds} rounds; "
          f"torch default threads {server_threads}", flush=True)
    saved_cache_dir = os.environ.get("FL_APP_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="bench-round-") as tmp:
        scratch = Path(tmp)
        out = Path(args.output_dir).expanduser() if args.output_dir else scratch / "runs"
        flower_configs = [(DEFAULT_FLOWER, 1, 1)]
        if "flower-2cpu" not in args.skip:
            flower_configs.append(("flower, 1 actor x 2 cpus, 2 threads", 2, 2))
        timings = []
        for name, cpus, threads in flower_configs:
            print(f"running {name} ...", flush=True)
            timings.append(run_flower(name, overrides, cpus, threads, out, server_threads,
                                      scratch))
        sampled = timings[0].sampled
        if any(t.sampled != sampled for t in timings):
            raise RuntimeError("the Flower runs sampled different clients; seeded sampling broke")
        plain_threads = [2] if "plain-1thread" in args.skip else [2, 1]
        for threads in plain_threads:
            name = f"plain loop, {threads} thread{'s' if threads > 1 else ''}"
            print(f"running {name} ...", flush=True)
            timings.append(run_plain(name, cfg, sampled, threads, scratch))
        torch.set_num_threads(server_threads)
    if saved_cache_dir is None:
        os.environ.pop("FL_APP_CACHE_DIR", None)
    else:
        os.environ["FL_APP_CACHE_DIR"] = saved_cache_dir
    accs = np.array([t.final_accuracy for t in timings])
    print(f"final test accuracy spread across ways: {accs.max() - accs.min():.4f} "
          "(same clients, seeds and data; float sums differ in order)")
    met = print_table(timings, args.rounds)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
