"""Local ImageFolder data: flwr-datasets' own loader against ours, on the real CIFAR-10.

Both produce what a client trains on, the float tensors of one partition (500 images
of 100 IID partitions), from ``<data-dir>/{train,test}/<class>/*.jpg``:

* **ours** (:func:`fl_app.learning.data.load_partition`): the file list and labels,
  flwr-datasets' partitioner over the label column, then TorchCodec (PIL where it does
  not load) decodes only the partition's JPEGs (torchvision ``ToTensor`` + ``Normalize``
  values); decoded partitions are
  kept per process and shared between processes through an on-disk ``.npy`` cache.
* **flwr-datasets** (``FederatedDataset(dataset="imagefolder", data_dir=...)``, Hugging
  Face's ImageFolder builder): it reads every image of both splits into an Arrow cache
  first, then ``load_partition`` gives the partition's rows, decoded with the same
  transform.

Rows (seconds, each way from a cold process state):

* **first partition**: from nothing to the first partition's tensors (ours: with the
  on-disk cache off, every JPEG decoded; flwr-datasets: its Arrow cache built from
  scratch in a temporary folder);
* **next partition**: another partition in the same process (what a round pays for
  each partition a process has not seen yet);
* **first partition, new process**: the first partition again in a fresh process
  state, the on-disk caches kept (ours: the ``.npy`` cache; flwr-datasets: its
  Arrow cache), what each new Ray actor or ClientApp process pays.

    python benchmarks/bench_loaders.py [--data-dir ../shared/data/cifar10-jpeg] [--per-class N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from fl_app.learning import data as fl_data
from fl_app.learning.decode import pil_pixels

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "cifar10-jpeg"
NUM_PARTITIONS = 100


def forget_ours() -> None:
    """Drop every in-process cache of fl_app.learning.data (a new process, as far as it knows)."""
    for cached in (fl_data.load_partition, fl_data.load_test_set, fl_data.partition_indices,
                   fl_data._catalogue, fl_data._digits_arrays):
        cached.cache_clear()


def ours(data_dir: Path) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """Partition ``p`` of 100 IID partitions through our loader."""
    cfg = fl_data.DataConfig(dataset="cifar10", data_dir=str(data_dir))
    return lambda p: fl_data.load_partition(cfg, p, NUM_PARTITIONS, "train")


def flwr_datasets_loader(data_dir: Path, cache_dir: Path
                         ) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """Partition ``p`` of 100 IID partitions through flwr-datasets' FederatedDataset."""
    from flwr_datasets import FederatedDataset
    from flwr_datasets.partitioner import IidPartitioner

    spec = fl_data.get_dataset_spec("cifar10")
    fds = FederatedDataset(dataset="imagefolder", data_dir=str(data_dir),
                           partitioners={"train": IidPartitioner(NUM_PARTITIONS)},
                           cache_dir=str(cache_dir))

    def load(p: int) -> tuple[torch.Tensor, torch.Tensor]:
        part = fds.load_partition(p, "train")
        # the same pixels-to-inputs step as ours
        x = fl_data.normalised(spec, pil_pixels(part["image"], "RGB"))
        return x, torch.tensor(part["label"], dtype=torch.int64)

    return load


def loader_and_first_partition(data_dir: Path, cache_dir: Path
                               ) -> tuple[Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                                          tuple[torch.Tensor, torch.Tensor]]:
    """flwr-datasets' loader and its partition 0 (the first partition's time builds it)."""
    load = flwr_datasets_loader(data_dir, cache_dir)
    return load, load(0)


def subset(data_dir: Path, out: Path, per_class: int) -> Path:
    """An ImageFolder of links to the first ``per_class`` images of each class and split."""
    for split in ("train", "test"):
        for cls in sorted(p for p in (data_dir / split).iterdir() if p.is_dir()):
            (out / split / cls.name).mkdir(parents=True)
            for image in sorted(cls.iterdir())[:per_class]:
                (out / split / cls.name / image.name).symlink_to(image)
    return out


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Wall seconds of one call of ``fn``, and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> int:
    """Time both loaders and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--per-class", type=int, default=0,
                        help="time a copy of the first N images of each class (0: all)")
    args = parser.parse_args()
    data_dir = args.data_dir.expanduser().resolve()
    if not (data_dir / "train").is_dir():
        parser.error(f"no CIFAR-10 at {data_dir} (expected <data-dir>/train/<class>/*.jpg)")
    if args.per_class < 0:
        parser.error("--per-class must be >= 0")
    torch.set_num_threads(1)  # a client's setting
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-loaders-") as tmp:
        scratch = Path(tmp)
        if args.per_class:
            data_dir = subset(data_dir, scratch / "subset", args.per_class)
        os.environ["FL_APP_CACHE_DIR"] = "off"
        forget_ours()
        first, (x, _) = timed(lambda: ours(data_dir)(0))
        following, _ = timed(lambda: ours(data_dir)(1))
        os.environ["FL_APP_CACHE_DIR"] = str(scratch / "npy")
        forget_ours()
        ours(data_dir)(2)  # fills the on-disk cache for partition 2
        forget_ours()
        again, _ = timed(lambda: ours(data_dir)(2))
        rows["ours"] = {"first": first, "next": following, "again": again}
        print(f"ours: {tuple(x.shape)} in {first:.1f} s", flush=True)

        hf_cache = scratch / "hf"
        first, (loader, (x, _)) = timed(lambda: loader_and_first_partition(data_dir, hf_cache))
        following, _ = timed(lambda: loader(1))
        again, _ = timed(lambda: flwr_datasets_loader(data_dir, hf_cache)(2))
        rows["flwr-datasets"] = {"first": first, "next": following, "again": again}
        print(f"flwr-datasets: {tuple(x.shape)} in {first:.1f} s", flush=True)
    header = f"{'loader':<15} {'first partition':>16} {'next partition':>15} {'new process':>12}"
    print(f"\nseconds; 100 IID partitions of {len(x)} CIFAR-10 images, one torch thread")
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        print(f"{name:<15} {r['first']:>16.2f} {r['next']:>15.2f} {r['again']:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
