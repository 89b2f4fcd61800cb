"""Datasets, partitioning and decoding into tensors (no Flower import beyond flwr-datasets).

Three sources, one interface (:func:`load_partition`, :func:`load_test_set`):

* ``digits`` (the offline default): scikit-learn's 1,797 real 8x8 handwritten
  digits, shipped inside the scikit-learn wheel, so a fresh machine runs with no
  network. A fixed stratified 80/20 split (1,437 train, 360 test) that does not
  depend on the run's seed, so every run is scored on the same test images.
* ``cifar10``, ``mnist``, ``fashion-mnist`` by name: downloaded the Flower way
  (``flwr_datasets.FederatedDataset`` from the Hugging Face hub) when the
  network is there.
* the same datasets from a local copy in ImageFolder layout
  (``data-dir/{train,test}/<class>/<image>``), e.g. ``../shared/data/cifar10-jpeg``.

Partitions come from flwr-datasets partitioners: ``iid`` (an ``IidPartitioner``
over the training set shuffled with the run's seed, so shards are not sorted by
class) and ``dirichlet`` (a ``DirichletPartitioner`` over labels with
``dirichlet-alpha`` and the run's seed). A client's local test split is its IID
share of the test set.

Decoding is the expensive part (50,000 JPEGs for CIFAR-10), so partitions and
test sets are decoded once per process and kept in a bounded LRU cache: a
simulation actor serving many rounds decodes each partition it sees once. The
decoders are in :mod:`fl_app.learning.decode`, the on-disk cache that shares
decoded pixels between processes in :mod:`fl_app.learning.pixel_cache`, the one
that shares partition tables in :mod:`fl_app.learning.partition_cache`, and the one
that holds every partition's model inputs, mapped by all processes, in
:mod:`fl_app.learning.inputs_cache` (a simulation's server fills it before round 1,
:mod:`fl_app.learning.mapped_inputs`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fl_app.errors import ConfigError, DataUnavailableError
from fl_app.learning import partition_cache, pixel_cache
from fl_app.learning.decode import image_file_pixels, pil_pixels

if TYPE_CHECKING:
    import datasets
    from flwr_datasets.partitioner import Partitioner

# datasets, flwr-datasets and torchvision are imported where used: together they
# take seconds to import, and a deployed ClientApp process starts for every message.

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed: the test set must not move with the run's seed
PARTITION_CACHE_SIZE = 128  # partitions per process; CIFAR partitions of 500 are ~6 MB


@dataclass(frozen=True)
class DatasetSpec:
    """What the app knows about a named dataset."""

    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_model: str
    hub_name: str = ""  # Hugging Face dataset id, "" for datasets shipped offline
    image_column: str = "image"
    label_column: str = "label"


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec((1, 8, 8), 10, (0.5,), (0.5,), "digits-cnn"),
    "cifar10": DatasetSpec((3, 32, 32), 10, (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616), "cifar-cnn", "uoft-cs/cifar10", "img"),
    "mnist": DatasetSpec((1, 28, 28), 10, (0.1307,), (0.3081,), "mnist-cnn", "ylecun/mnist"),
    "fashion-mnist": DatasetSpec((1, 28, 28), 10, (0.2860,), (0.3530,), "mnist-cnn",
                                 "zalando-datasets/fashion_mnist"),
}
PARTITIONINGS = ("iid", "dirichlet", "pathological", "shard", "inner-dirichlet")


@dataclass(frozen=True)
class DataConfig:
    """Everything that decides which examples a partition holds (hashable: a cache key)."""

    dataset: str = "digits"
    data_dir: str = ""
    partitioning: str = "iid"
    dirichlet_alpha: float = 0.5
    seed: int = 0
    partition_classes: int = 2  # pathological: the classes each client holds
    partition_shards: int = 2  # shard: the label-sorted shards each client holds


def get_dataset_spec(name: str) -> DatasetSpec:
    """Return the spec of dataset ``name`` or a :class:`ConfigError` listing the valid names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError("dataset", name, f"one of {sorted(DATASETS)}") from None


def check_data_config(cfg: DataConfig) -> None:
    """Refuse an unknown dataset or partitioning, or a ``data-dir`` that is not there."""
    get_dataset_spec(cfg.dataset)
    if cfg.partitioning not in PARTITIONINGS:
        raise ConfigError("partitioning", cfg.partitioning, f"one of {list(PARTITIONINGS)}")
    if not cfg.dirichlet_alpha > 0:
        raise ConfigError("dirichlet-alpha", cfg.dirichlet_alpha, "a number > 0")
    if cfg.data_dir:
        if cfg.dataset == "digits":
            raise ConfigError("data-dir", cfg.data_dir, "'' for dataset 'digits'",
                              "digits ships with scikit-learn; data-dir is for the others.")
        root = Path(cfg.data_dir).expanduser()
        missing = [s for s in ("train", "test") if not (root / s).is_dir()]
        if missing:
            raise ConfigError(
                "data-dir", cfg.data_dir,
                "a folder in ImageFolder layout with train/<class>/ and test/<class>/",
                f"Missing: {', '.join(str(root / m) for m in missing)}.")


# --------------------------------------------------------------------------- catalogues
@dataclass(frozen=True)
class _Catalogue:
    """A split as a label column plus a way to decode chosen rows into tensors.

    Decoding is two steps so that the on-disk cache can hold the small step-one
    result: ``pixels_of`` gives a batch's pixels (uint8 for image files, a quarter of
    the float inputs' bytes), ``inputs_of`` turns pixels into the model's inputs.
    """

    labels: np.ndarray
    rows: Sequence  # per-row handle: an index, a file path or a hub row
    pixels_of: Callable[[np.ndarray], torch.Tensor]  # row numbers -> N x C x H x W pixels
    inputs_of: Callable[[torch.Tensor], torch.Tensor]  # pixels -> normalised inputs


def standardised(spec: DatasetSpec, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """The images of a batch in ``[0, 1]``, standardised: ``Normalize(spec.mean, spec.std)``."""
    from torchvision.transforms.functional import normalize

    return normalize(x, list(spec.mean), list(spec.std), inplace=inplace)


def normalised(spec: DatasetSpec, pixels: torch.Tensor) -> torch.Tensor:
    """The model inputs of ``N x C x H x W`` uint8 ``pixels``: ``ToTensor`` then ``Normalize``.

    torchvision's ``ToTensor`` (``x / 255``) and ``Normalize(mean, std)``, applied to
    the whole batch at once: the same values as the per-image transform, without its
    per-image cost. In place on the one float copy: each temporary of a partition is
    ~6 MB of fresh memory, which a new process pays for in page faults.
    """
    return standardised(spec, pixels.to(torch.float32, copy=True).div_(255), inplace=True)


@functools.cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # pixel values 0..16 -> [0, 1]
    x_train, x_test, y_train, y_test = train_test_split(
        images, bunch.target.astype(np.int64), test_size=DIGITS_TEST_FRACTION,
        stratify=bunch.target, random_state=DIGITS_SPLIT_SEED)
    return x_train, y_train, x_test, y_test


def _imagefolder_rows(split_dir: Path) -> tuple[np.ndarray, list[str]]:
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    labels, paths = [], []
    for label, cls in enumerate(classes):
        files = sorted(f for f in os.listdir(split_dir / cls) if f.lower().endswith(IMAGE_SUFFIXES))
        paths += [str(split_dir / cls / f) for f in files]
        labels += [label] * len(files)
    if not paths:
        raise DataUnavailableError(f"no images found under {split_dir} (ImageFolder layout "
                                   "<split>/<class>/<image> expected)")
    return np.asarray(labels, dtype=np.int64), paths


def _hub_split(spec: DatasetSpec, split: str) -> datasets.Dataset:
    import datasets

    try:
        return datasets.load_dataset(spec.hub_name, split=split)
    except Exception as exc:  # the hub raises many types (connection, offline mode, ...)
        raise DataUnavailableError(
            f"could not load {spec.hub_name!r} ({split}) from the Hugging Face hub: {exc}. "
            "Offline? Point data-dir at a local copy in ImageFolder layout "
            "(data-dir/train/<class>/*.jpg, data-dir/test/<class>/*.jpg), e.g. "
            "--run-config \"data-dir='/path/to/cifar10-jpeg'\", or use dataset='digits', "
            "which needs no network.") from exc


@functools.lru_cache(maxsize=4)
def _catalogue(dataset: str, data_dir: str, split: str) -> _Catalogue:
    spec = get_dataset_spec(dataset)
    if dataset == "digits":
        x_train, y_train, x_test, y_test = _digits_arrays()
        x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
        return _Catalogue(y, range(len(y)), lambda rows: torch.from_numpy(x[rows]).unsqueeze(1),
                          functools.partial(standardised, spec))
    mode = "RGB" if spec.input_shape[0] == 3 else "L"
    to_inputs = functools.partial(normalised, spec)
    if data_dir:
        labels, paths = _imagefolder_rows(Path(data_dir).expanduser() / split)
        return _Catalogue(labels, paths, lambda rows: image_file_pixels(
            [paths[int(r)] for r in rows], mode), to_inputs)
    hub = _hub_split(spec, split)
    labels = np.asarray(hub[spec.label_column], dtype=np.int64)
    return _Catalogue(labels, range(len(labels)), lambda rows: pil_pixels(
        (hub[int(r)][spec.image_column] for r in rows), mode), to_inputs)


def _make_partitioner(cfg: DataConfig, num_partitions: int) -> Partitioner:
    """flwr-datasets' partitioner for ``cfg.partitioning`` (all seeded by the run's seed).

    * ``iid``: even shards of the shuffled split;
    * ``dirichlet``: each client's size and label mix from ``Dir(dirichlet-alpha)`` over
      clients per class (Hsu et al. 2019), every client at least one example;
    * ``pathological``: each client holds ``partition-classes`` classes, its share of each
      (McMahan et al. 2017's "pathological non-IID");
    * ``shard``: the split sorted by label and cut into shards, ``partition-shards`` shards
      per client (McMahan et al. 2017's 2 shards of 300 MNIST digits each);
    * ``inner-dirichlet``: equal client sizes, each client's label mix drawn from
      ``Dir(dirichlet-alpha)`` over classes.
    """
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        InnerDirichletPartitioner,
        PathologicalPartitioner,
        ShardPartitioner,
    )

    if cfg.partitioning == "iid":
        return IidPartitioner(num_partitions=num_partitions)
    if cfg.partitioning == "pathological":
        return PathologicalPartitioner(num_partitions=num_partitions, partition_by="label",
                                       num_classes_per_partition=cfg.partition_classes,
                                       seed=cfg.seed)
    if cfg.partitioning == "shard":
        return ShardPartitioner(num_partitions=num_partitions, partition_by="label",
                                num_shards_per_partition=cfg.partition_shards, seed=cfg.seed)
    if cfg.partitioning == "inner-dirichlet":
        num_examples = len(_catalogue(cfg.dataset, cfg.data_dir, "train").labels)
        sizes = [num_examples // num_partitions + (p < num_examples % num_partitions)
                 for p in range(num_partitions)]
        return InnerDirichletPartitioner(partition_sizes=sizes, partition_by="label",
                                         alpha=cfg.dirichlet_alpha, seed=cfg.seed)
    # min_partition_size=1: every client gets data, even at 1,000 partitions of digits.
    return DirichletPartitioner(num_partitions=num_partitions, partition_by="label",
                                alpha=cfg.dirichlet_alpha, min_partition_size=1,
                                self_balancing=False, shuffle=True, seed=cfg.seed)


@functools.lru_cache(maxsize=8)
def partition_indices(cfg: DataConfig, num_partitions: int, split: str = "train"
                      ) -> tuple[np.ndarray, ...]:
    """Return, for every partition, the row indices of ``split`` it holds.

    The training split is partitioned with ``cfg.partitioning``; the test split
    always IID (a client's local test share). Deterministic in ``cfg.seed``.
    """
    check_data_config(cfg)
    if num_partitions < 1:
        raise ConfigError("num-partitions", num_partitions, "an integer >= 1")
    labels = _catalogue(cfg.dataset, cfg.data_dir, split).labels
    if num_partitions > len(labels):
        raise ConfigError("num-partitions", num_partitions,
                          f"at most {len(labels)} (the examples in the {split} split)")
    entry = partition_cache.table_file(repr((cfg, num_partitions, split)), labels)
    cached = partition_cache.read_table(entry, num_partitions, len(labels))
    if cached is not None:
        return cached
    import datasets
    from flwr_datasets.partitioner import IidPartitioner

    # A label table with the original row index; shuffled so IID shards mix classes.
    table = datasets.Dataset.from_dict({"label": labels, "row": np.arange(len(labels))})
    table = table.shuffle(seed=cfg.seed)
    partitioner = (_make_partitioner(cfg, num_partitions) if split == "train"
                   else IidPartitioner(num_partitions=num_partitions))
    partitioner.dataset = table
    partitions = tuple(np.asarray(partitioner.load_partition(p)["row"], dtype=np.int64)
                       for p in range(num_partitions))
    partition_cache.write_table(entry, partitions)
    return partitions


def _decode(cfg: DataConfig, split: str, rows: np.ndarray, store_pixels: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor]:
    cat = _catalogue(cfg.dataset, cfg.data_dir, split)
    shape = get_dataset_spec(cfg.dataset).input_shape
    if len(rows) == 0:
        return torch.empty((0, *shape)), torch.empty(0, dtype=torch.int64)
    # Only image files are cached: digits and hub copies decode fast already.
    cache_file = (pixel_cache.cache_file(cfg.dataset, split, [cat.rows[int(r)] for r in rows])
                  if cfg.data_dir else None)
    pixels = pixel_cache.read_cached(cache_file, (len(rows), *shape))
    if pixels is None:
        pixels = cat.pixels_of(rows)
        if tuple(pixels.shape[1:]) == shape and cache_file is not None and store_pixels:
            pixel_cache.write_cached(cache_file, pixels)
    if tuple(pixels.shape[1:]) != shape:
        raise DataUnavailableError(
            f"images of {cfg.dataset!r} in {cfg.data_dir or 'the hub copy'} have shape "
            f"{tuple(pixels.shape[1:])}, expected {shape}: is data-dir the right dataset?")
    x = cat.inputs_of(pixels)
    return x.contiguous(), torch.from_numpy(cat.labels[rows]).contiguous()


@functools.lru_cache(maxsize=PARTITION_CACHE_SIZE)
def load_partition(cfg: DataConfig, partition_id: int, num_partitions: int,
                   split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(x, y)`` of one client's partition, decoded once per process.

    From the inputs entry, mapped, where a simulation's server stored one
    (:func:`fl_app.learning.mapped_inputs.store_partition_inputs`); decoded otherwise.
    """
    if not 0 <= partition_id < num_partitions:
        raise ConfigError("partition-id", partition_id, f"an integer in [0, {num_partitions})")
    from fl_app.learning.mapped_inputs import mapped_partition  # it builds on this module

    mapped = mapped_partition(cfg, partition_id, num_partitions, split)
    if mapped is not None:
        return mapped
    rows = partition_indices(cfg, num_partitions, split)[partition_id]
    return _decode(cfg, split, rows)


def split_size(cfg: DataConfig, split: str = "train") -> int:
    """The number of examples in ``split``."""
    check_data_config(cfg)
    return len(_catalogue(cfg.dataset, cfg.data_dir, split).labels)


def load_rows(cfg: DataConfig, split: str, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of the given rows of ``split`` (e.g. the examples an audit asks about)."""
    check_data_config(cfg)
    return _decode(cfg, split, np.asarray(rows, dtype=np.int64))


@functools.lru_cache(maxsize=2)
def load_test_set(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the whole test split as ``(x, y)`` (the server's central evaluation)."""
    check_data_config(cfg)
    cat = _catalogue(cfg.dataset, cfg.data_dir, "test")
    return _decode(cfg, "test", np.arange(len(cat.labels)))

