"""Partitions served from the inputs entry: which entry, whether it is current, storing it.

:func:`store_partition_inputs` (a simulation's server, before round 1) decodes and
normalises every partition of a split once into the entry of
:mod:`fl_app.learning.inputs_cache`; :func:`mapped_partition`, which
:func:`fl_app.learning.data.load_partition` asks first, returns a partition as a slice
of the mapped entry while its image files still have the digest stored with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fl_app.learning import data, inputs_cache, pixel_cache


def entry_of(cfg: data.DataConfig, num_partitions: int, split: str
             ) -> tuple[Path, Path] | None:
    """The inputs entry of the setting's partitions of ``split``.

    None with the cache off, or without image files: digits and hub copies decode
    fast, and only image files are cached.
    """
    if not cfg.data_dir:
        return None
    # Named by the table itself, so a partition's offset in the entry is its offset in it.
    partitions = data.partition_indices(cfg, num_partitions, split)
    spec = data.get_dataset_spec(cfg.dataset)  # the normalisation the inputs went through
    return inputs_cache.entry_files(repr((cfg, num_partitions, split, spec)), partitions)


def partition_digest(cfg: data.DataConfig, split: str, rows: np.ndarray) -> bytes:
    """The digest of the image files of ``rows``, as the entry stores it per partition."""
    paths = data._catalogue(cfg.dataset, cfg.data_dir, split).rows
    return pixel_cache.files_digest(cfg.dataset, [paths[int(r)] for r in rows]).encode()


_MAPPED: dict[Path, tuple[np.ndarray, np.ndarray]] = {}  # per process: a hit is kept, a miss not


def mapped_partition(cfg: data.DataConfig, partition_id: int, num_partitions: int, split: str
                     ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The partition as a slice of the mapped inputs entry, if there is one and it is current."""
    entry = entry_of(cfg, num_partitions, split)
    if entry is None:
        return None
    partitions = data.partition_indices(cfg, num_partitions, split)
    if entry[0] not in _MAPPED:
        shape = data.get_dataset_spec(cfg.dataset).input_shape
        mapped = inputs_cache.map_entry(entry, sum(map(len, partitions)), shape, num_partitions)
        if mapped is None:
            return None
        _MAPPED[entry[0]] = mapped
    inputs, digests = _MAPPED[entry[0]]
    rows = partitions[partition_id]
    if digests[partition_id] != partition_digest(cfg, split, rows):
        return None  # an image changed since the entry was stored: decode it afresh
    start = sum(len(p) for p in partitions[:partition_id])
    labels = data._catalogue(cfg.dataset, cfg.data_dir, split).labels[rows]
    return torch.from_numpy(inputs[start:start + len(rows)]), torch.from_numpy(labels)


def store_partition_inputs(cfg: data.DataConfig, num_partitions: int, split: str = "train"
                           ) -> Path | None:
    """Decode and normalise every partition of ``split`` once, into the inputs entry.

    Afterwards :func:`fl_app.learning.data.load_partition` in every process of the
    machine maps its partition from that file (:mod:`fl_app.learning.inputs_cache`). A current entry
    is kept; nothing is done for data without image files, with the cache off, or
    for a split over ``inputs_cache.MAX_ENTRY_BYTES``. Returns the inputs file, or
    None when there is none.
    """
    data.check_data_config(cfg)
    entry = entry_of(cfg, num_partitions, split)
    if entry is None:
        return None
    partitions = data.partition_indices(cfg, num_partitions, split)
    num_rows, shape = sum(map(len, partitions)), data.get_dataset_spec(cfg.dataset).input_shape
    digests = [partition_digest(cfg, split, rows) for rows in partitions]
    current = inputs_cache.map_entry(entry, num_rows, shape, num_partitions)
    if current is not None and list(current[1]) == digests:
        inputs_cache.mark_used(entry)
        return entry[0]
    _MAPPED.pop(entry[0], None)
    inputs = (data._decode(cfg, split, rows, store_pixels=False)[0].numpy()
              for rows in partitions)  # one partition in memory at a time
    stored = inputs_cache.write_entry(entry, inputs, num_rows, shape,
                                      [d.decode() for d in digests])
    return entry[0] if stored else None
