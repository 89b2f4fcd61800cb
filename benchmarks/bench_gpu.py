"""CPU against GPU in one run: the seed setting's Flower round, and one client's epoch.

Rows, each measured on every device this process can use (``cpu``, and ``cuda`` when
torch sees a GPU), side by side:

* **Flower round**: the seed's CIFAR-10 setting through the app
  (:func:`fl_app.experiments.simulate.simulate`: 100 IID nodes, 25 sampled a round,
  500 images each, batch 10, lr 0.01, momentum 0.5, one local epoch, cifar-cnn,
  FedAvg, central evaluation on the 10,000 test images), seconds per round: the
  median of rounds 2..R from ``rounds.csv``. On the CPU: one actor per core, one
  torch thread each, ``device='cpu'``. On the GPU: ``device='cuda'`` with
  ``--gpu-share`` of the GPU per client (``client-resources-num-gpus``), so
  ``1 / share`` actors share it, and one CPU each.
* **epoch, non-private** and **epoch, DP-SGD** (``bookkeeping``, the default engine):
  one client's local epoch on its 500 images, the model and data on the device;
  the median over ``--repeats`` after one warm-up.

Without a GPU the ``cuda`` column says it was not measured, and the script exits 0 (the
CPU column is still a measurement). Usage::

    python benchmarks/bench_gpu.py                        # CIFAR-10, 4 rounds, 5 repeats
    python benchmarks/bench_gpu.py --gpu-share 0.1 --rounds 6
    python benchmarks/bench_gpu.py --quick                # digits, 2 rounds (smoke test)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from bench_round import (
    DEFAULT_DATA_DIR,
    NUM_PARTITIONS,
    check_setting,
    read_rounds,
    seed_overrides,
)

from fl_app.config import parse_run_config
from fl_app.experiments.simulate import simulate
from fl_app.federation.roles import build_run_model
from fl_app.learning.device import cuda_devices_seen, load_partition_on
from fl_app.privacy import DPSettings, new_accountant, train_private
from fl_app.privacy.randomness import seeded_generator
from fl_app.task import train

NOT_MEASURED = "not measured"


def flower_round(overrides: dict, device: str, gpu_share: float, out: Path) -> float:
    """Median seconds of rounds 2..R of the seed setting run by the app on ``device``."""
    run = {**overrides, "device": device, "output-dir": str(out), "run-name": device}
    run_dir = simulate(run, num_supernodes=NUM_PARTITIONS, num_cpus_per_client=1,
                       num_gpus_per_client=gpu_share if device == "cuda" else 0.0)
    seconds = [float(r["seconds"]) for r in read_rounds(run_dir)]
    print(f"{device}: seconds per round {' '.join(f'{t:.2f}' for t in seconds)}", flush=True)
    return statistics.median(seconds[1:] or seconds)


def epoch_timer(overrides: dict, device: torch.device, private: bool) -> Callable[[int], None]:
    """One local epoch of partition 0 on ``device`` (DP-SGD when ``private``)."""
    cfg = parse_run_config(overrides)
    x, y = load_partition_on(device, cfg.data, 0, NUM_PARTITIONS, "train")
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0)

    def run(seed: int) -> None:
        torch.manual_seed(seed)
        model = build_run_model(parse_run_config({**overrides, "dp": private})).to(device)
        if private:
            train_private(model, x, y, cfg.train, dp, new_accountant("rdp"),
                          seeded_generator(seed))
        else:
            train(model, x, y, cfg.train, torch.Generator().manual_seed(seed))
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def median_seconds(run: Callable[[int], None], repeats: int) -> float:
    """Median wall seconds of ``run`` over ``repeats`` calls after one warm-up call."""
    run(0)
    times = []
    for repeat in range(1, repeats + 1):
        start = time.perf_counter()
        run(repeat)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(args: argparse.Namespace, devices: Sequence[str], out: Path
            ) -> dict[str, dict[str, float]]:
    """Every row on every device: ``{row: {device: seconds}}``."""
    overrides = seed_overrides(args)
    rows: dict[str, dict[str, float]] = {"flower round": {}, "epoch, non-private": {},
                                         "epoch, DP-SGD": {}}
    threads = torch.get_num_threads()
    for device in devices:  # the epochs first: a finished simulation's Ray takes a while to go
        torch.set_num_threads(1)  # one client's epoch as an actor runs it: one thread
        for name, private in (("epoch, non-private", False), ("epoch, DP-SGD", True)):
            print(f"timing {name} on {device} ...", flush=True)
            rows[name][device] = median_seconds(
                epoch_timer(overrides, torch.device(device), private), args.repeats)
        torch.set_num_threads(threads)
    for device in devices:
        print(f"running the Flower round on {device} ...", flush=True)
        rows["flower round"][device] = flower_round(overrides, device, args.gpu_share, out)
    return rows


def print_table(rows: dict[str, dict[str, float]], gpu: str) -> None:
    """The side-by-side table: seconds on each device and the CPU / GPU speed-up."""
    header = f"{'row':<22} {'cpu s':>9} {'cuda s':>14} {'speed-up':>9}"
    print(f"\ncuda: {gpu}")
    print(header)
    print("-" * len(header))
    for name, by_device in rows.items():
        cpu, cuda = by_device["cpu"], by_device.get("cuda")
        shown = f"{cuda:>14.3f}" if cuda is not None else f"{NOT_MEASURED:>14}"
        speed = f"{cpu / cuda:>8.2f}x" if cuda else f"{'-':>9}"
        print(f"{name:<22} {cpu:>9.3f} {shown} {speed}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (those of bench_round that name the setting, plus the GPU's)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--dataset", default="cifar10", choices=("cifar10", "digits"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gpu-share", type=float, default=0.125,
                        help="fraction of the GPU per client actor (default 1/8)")
    parser.add_argument("--quick", action="store_true", help="smoke test: digits, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.dataset, args.rounds, args.repeats = "digits", 2, 1
    check_setting(parser, args)
    if not 0 < args.gpu_share <= 1:
        parser.error("--gpu-share must be in (0, 1]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Measure on every device here and print the table."""
    args = parse_args(argv)
    warnings.filterwarnings("ignore")  # Opacus' secure-RNG notice
    seen = cuda_devices_seen()
    devices = ["cpu", "cuda"] if seen else ["cpu"]
    gpu = (f"{torch.cuda.get_device_name(0)} ({seen} visible), {args.gpu_share:g} of it per "
           "client" if seen else f"{NOT_MEASURED}: no CUDA device visible to this process")
    print(f"{args.dataset}: {NUM_PARTITIONS} nodes, 25 a round, {args.rounds} rounds; "
          f"{os.cpu_count()} cores; torch {torch.__version__}; cuda: {gpu}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        rows = measure(args, devices, Path(tmp))
    print_table(rows, gpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
