"""Time one client's local epoch without DP and with DP-SGD in every grad-sample mode.

The seed's setting: cifar-cnn, 500 CIFAR-10 training images (the first 50 of each
class from ``../shared/data/cifar10-jpeg``, or fixed random data with
``--random-data``), batch 10, lr 0.01, momentum 0.5, one local epoch. DP uses
noise multiplier 1.0, max grad norm 1.0 and the RDP accountant (the settings do
not change the cost). Each repeat runs every mode once, in turn, so a slowdown of
the machine hits all of them alike; the table gives medians over the repeats after
``--warmup`` discarded ones, of wall-clock seconds and of this process's CPU
seconds (steadier on a shared machine), and of each repeat's ratio to that
repeat's non-private epoch.

``--sources`` times each DP mode with each source of DP randomness
(:mod:`fl_app.privacy.randomness`): ``seeded`` (simulation) and ``os`` (a real
device: the generator's whole state drawn from ``os.urandom``, once per client
round, counted in the epoch). Rows ``mode/os`` add the paired ratio to the same
mode seeded, the cost of the OS source.

    python benchmarks/bench_dp.py [--threads 1 2] [--repeats 7] [--random-data]
                                  [--modes bookkeeping] [--sources seeded os]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fl_app.learning.models import build_model
from fl_app.privacy import GRAD_SAMPLE_MODES, DPSettings, new_accountant, train_private
from fl_app.privacy.randomness import OS, SEEDED, dp_generator
from fl_app.task import TrainSettings, train

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"
SETTINGS = TrainSettings(local_epochs=1, batch_size=10, learning_rate=0.01, momentum=0.5)
NON_PRIVATE = "non-private"


def load_cifar(data_dir: Path, per_class: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the first ``per_class`` training JPEGs of each class, scaled to [-1, 1]."""
    classes = sorted(p.name for p in (data_dir / "train").iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((data_dir / "train" / name).glob("*.jpg"))[:per_class]:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB"), dtype=np.float32))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) / 127.5 - 1.0
    return x.contiguous(), torch.tensor(labels, dtype=torch.int64)


def random_data(num_examples: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Return fixed random 3x32x32 images and labels."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(num_examples, 3, 32, 32, generator=generator)
    return x, torch.randint(0, 10, (num_examples,), generator=generator)


def epoch_runner(mode: str, x: torch.Tensor, y: torch.Tensor,
                 source: str = SEEDED) -> Callable[[int], None]:
    """Return a function running one local epoch of ``mode`` on a fresh model.

    A DP epoch draws its masks and noise from ``source`` (its generator is made
    inside the timed call, as a client makes it once per round).
    """

    def run(seed: int) -> None:
        torch.manual_seed(seed)
        model = build_model("cifar-cnn")
        if mode == NON_PRIVATE:
            train(model, x, y, SETTINGS, torch.Generator().manual_seed(seed))
        else:
            dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, grad_sample_mode=mode)
            train_private(model, x, y, SETTINGS, dp, new_accountant("rdp"),
                          dp_generator(source, seed))

    return run


def label(mode: str, source: str) -> str:
    """A row's name: the mode, with ``/source`` unless it is seeded (or non-private)."""
    return mode if source == SEEDED or mode == NON_PRIVATE else f"{mode}/{source}"


def measure(modes: list[str], x: torch.Tensor, y: torch.Tensor, repeats: int,
            warmup: int, sources: tuple[str, ...] = (SEEDED,)) -> dict[str, dict[str, float]]:
    """Return each row's medians over repeats: wall and CPU seconds, and paired ratios.

    Every repeat runs all rows back to back; a row's ratio in a repeat is its
    time over the non-private time of that same repeat (and, for ``mode/source``
    rows, over the seeded ``mode`` of that repeat: ``wall_vs_seeded``), so a
    machine busy with other work slows both sides of a ratio alike.
    """
    runners = {label(mode, source): epoch_runner(mode, x, y, source)
               for mode in modes for source in sources}
    wall: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    for repeat in range(warmup + repeats):
        for mode, run in runners.items():
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            run(repeat)
            if repeat >= warmup:
                wall[mode].append(time.perf_counter() - wall_start)
                cpu[mode].append(time.process_time() - cpu_start)

    def paired(times: list[float], base: list[float]) -> float:
        return statistics.median(t / b for t, b in zip(times, base, strict=True))

    return {name: {
        "wall": statistics.median(wall[name]), "wall_ratio": paired(wall[name], wall[NON_PRIVATE]),
        "cpu": statistics.median(cpu[name]), "cpu_ratio": paired(cpu[name], cpu[NON_PRIVATE]),
        "wall_vs_seeded": paired(wall[name], wall[name.split("/")[0]]),
        "cpu_vs_seeded": paired(cpu[name], cpu[name.split("/")[0]]),
    } for name in runners}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=sorted(GRAD_SAMPLE_MODES))
    parser.add_argument("--sources", nargs="+", default=[SEEDED, OS], choices=[SEEDED, OS])
    parser.add_argument("--random-data", action="store_true")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args()

    warnings.filterwarnings("ignore")  # Opacus' secure-RNG and experimental-mode notices
    if args.random_data or not (args.data_dir / "train").is_dir():
        x, y, source = *random_data(), "random 3x32x32"
    else:
        x, y, source = *load_cifar(args.data_dir), f"CIFAR-10 from {args.data_dir}"
    print(f"cifar-cnn, {len(y)} examples ({source}), batch {SETTINGS.batch_size}, "
          f"lr {SETTINGS.learning_rate}, momentum {SETTINGS.momentum}; medians of "
          f"{args.repeats} repeats after {args.warmup} warm-up")
    print(f"{'threads':>7}  {'mode':<15} {'wall s/epoch':>12} {'x non-priv':>10} "
          f"{'CPU s/epoch':>12} {'x non-priv':>10} {'wall x seeded':>13} {'CPU x seeded':>12}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        results = measure([NON_PRIVATE, *args.modes], x, y, args.repeats, args.warmup,
                          tuple(args.sources))
        for name, r in results.items():
            vs = (f"{r['wall_vs_seeded']:>12.3f}x {r['cpu_vs_seeded']:>11.3f}x"
                  if "/" in name else "")
            print(f"{threads:>7}  {name:<15} {r['wall']:>12.3f} {r['wall_ratio']:>9.2f}x "
                  f"{r['cpu']:>12.3f} {r['cpu_ratio']:>9.2f}x {vs}")
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()} on {os.cpu_count()} "
          "CPUs; with other work running, trust the CPU columns and the ratios")


if __name__ == "__main__":
    main()
