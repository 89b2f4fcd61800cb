"""The on-disk cache of partition tables: the rows of a split each client holds.

flwr-datasets partitions a Hugging Face ``Dataset`` of the label column. Importing
``datasets`` and ``flwr_datasets`` and partitioning take ~3 s a process, which every
client actor of every run paid before its first round. The server computes the
table before round 1 (:mod:`fl_app.federation.checks`) and stores it here, in the
folder of :func:`fl_app.learning.pixel_cache.decode_cache_dir`; the actors, and
later runs of the same setting, read it in milliseconds.

An entry is named by everything the table depends on: the setting (dataset, data
folder, partitioning and its parameters, seed, number of partitions, split), the
label column itself, and the versions of flwr-datasets and datasets, so a
partitioner that draws differently after an upgrade is never answered from an
older one's entry.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import PackageNotFoundError, version
from itertools import pairwise
from pathlib import Path

import numpy as np

from fl_app.learning.pixel_cache import decode_cache_dir, load_atomically_saved, save_atomically

PARTITIONING_LIBRARIES = ("flwr-datasets", "datasets")


def _library_versions() -> str:
    versions = []
    for name in PARTITIONING_LIBRARIES:
        try:
            versions.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            versions.append(f"{name} missing")
    return ";".join(versions)


def table_file(setting: str, labels: np.ndarray) -> Path | None:
    """The entry of the table that ``setting`` (a repr of all it depends on) gives ``labels``.

    None when the cache is off (``FL_APP_CACHE_DIR=off``).
    """
    root = decode_cache_dir()
    if root is None:
        return None
    digest = hashlib.blake2b(f"{setting}|{_library_versions()}|".encode(), digest_size=16)
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return root / f"partitions-{digest.hexdigest()}.npy"


def read_table(path: Path | None, num_partitions: int, num_rows: int
               ) -> tuple[np.ndarray, ...] | None:
    """The ``num_partitions`` row arrays stored at ``path``, or None if it holds no such table.

    Stored as one int64 array: ``num_partitions + 1`` offsets, then every partition's
    rows in turn. Anything else (unreadable, other sizes, rows outside ``[0,
    num_rows)``) is a miss, and the table is computed again.
    """
    stored = load_atomically_saved(path)
    if (stored is None or stored.dtype != np.int64 or stored.ndim != 1
            or len(stored) < num_partitions + 1):
        return None
    offsets, rows = stored[:num_partitions + 1], stored[num_partitions + 1:]
    if (offsets[0] != 0 or offsets[-1] != len(rows) or np.any(np.diff(offsets) < 0)
            or (len(rows) and (rows.min() < 0 or rows.max() >= num_rows))):
        return None
    return tuple(rows[start:end] for start, end in pairwise(offsets))


def write_table(path: Path | None, partitions: tuple[np.ndarray, ...]) -> None:
    """Store ``partitions`` at ``path`` (nothing when the cache is off)."""
    if path is None:
        return
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in partitions])]).astype(np.int64)
    save_atomically(path, np.concatenate([offsets, *partitions]).astype(np.int64))
