"""The on-disk cache of every partition's model inputs, one file that every process maps.

A simulated client actor given a partition it has not held yet decoded its JPEGs
(or read their pixels from :mod:`fl_app.learning.pixel_cache`) and normalised them
into ~6 MB of new memory: half of an actor's samples in a profile of CIFAR-10
rounds 2-5, and memory touched for the first time is slow on a VM. Instead, the
server of a simulation decodes and normalises each partition of the split once
before round 1 (:func:`fl_app.learning.mapped_inputs.store_partition_inputs`), in partition
order, into one float32 ``.npy``; each process maps it copy-on-write, so a
partition is a slice of the page cache that all actors share: no decoding, no new
memory, and a caller that writes to it changes only its own copy.

An entry is two files named by the setting (as :mod:`fl_app.learning.partition_cache`
names its tables, plus the normalisation) and the partition table: the inputs, and the digest
(:func:`fl_app.learning.pixel_cache.files_digest`) of each partition's image files.
A partition is served from the entry only while its files still have that digest,
so a replaced image is decoded again, never served stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from fl_app.learning.pixel_cache import decode_cache_dir, load_atomically_saved, save_atomically

# All entries together, and so any one (a bigger split is decoded partition by partition,
# as before): a new entry first removes the least recently stored or used ones.
MAX_ENTRY_BYTES = 8 * 2**30
DIGEST_DTYPE = "S32"  # files_digest: 32 hex characters


def entry_files(setting: str, partitions: Sequence[np.ndarray]) -> tuple[Path, Path] | None:
    """``(inputs, digests)`` files of the entry of ``setting``'s partition table; None: cache off.

    Named by the table's rows and sizes too: the entry's layout is the table's.
    """
    root = decode_cache_dir()
    if root is None:
        return None
    digest = hashlib.blake2b(f"{setting}|".encode(), digest_size=16)
    digest.update(np.asarray([len(p) for p in partitions], dtype=np.int64).tobytes())
    for rows in partitions:
        digest.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    inputs_file = root / f"inputs-{digest.hexdigest()}.npy"
    return inputs_file, _digests_file(inputs_file)


def _digests_file(inputs_file: Path) -> Path:
    """The file of the per-partition digests beside ``inputs_file``."""
    return inputs_file.with_name(f"{inputs_file.stem}-digests.npy")


def map_entry(entry: tuple[Path, Path] | None, num_rows: int, shape: tuple[int, ...],
              num_partitions: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The entry's inputs (mapped copy-on-write) and digests; None if it holds no such thing.

    A missing or unreadable file, another shape or dtype, or the wrong number of
    digests is a miss: the partitions are decoded as without the cache.
    """
    if entry is None:
        return None
    inputs_file, digests_file = entry
    digests = load_atomically_saved(digests_file)
    if (digests is None or digests.dtype != np.dtype(DIGEST_DTYPE)
            or digests.shape != (num_partitions,) or not inputs_file.exists()):
        return None
    try:
        inputs = np.load(inputs_file, mmap_mode="c")
    except (OSError, ValueError):
        return None
    if inputs.dtype != np.float32 or inputs.shape != (num_rows, *shape):
        return None
    return inputs, digests


def write_entry(entry: tuple[Path, Path], partitions_inputs: Iterable[np.ndarray],
                num_rows: int, shape: tuple[int, ...], digests: list[str]) -> bool:
    """Store the partitions' inputs, in order, then their digests; False if the disk refused.

    Each file is whole or absent (written aside, then renamed), and the digests go
    last: a reader that finds new inputs with old digests decodes the partitions
    whose files changed, and serves the others, whose inputs are the same.
    """
    inputs_file, digests_file = entry
    size = num_rows * int(np.prod(shape)) * 4
    if size > MAX_ENTRY_BYTES:
        return False
    _make_room(inputs_file.parent, MAX_ENTRY_BYTES - size)
    tmp = inputs_file.with_name(f".{inputs_file.name}.{os.getpid()}.tmp")
    try:
        inputs_file.parent.mkdir(parents=True, exist_ok=True)
        stored = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                           shape=(num_rows, *shape))
        start = 0
        for x in partitions_inputs:  # one partition in memory at a time
            stored[start:start + len(x)] = x
            start += len(x)
        stored.flush()
        del stored
        if start != num_rows:
            raise OSError(f"{start} inputs for {num_rows} rows")
        os.replace(tmp, inputs_file)
    except OSError:  # a full or read-only disk costs decoding per partition, as before
        tmp.unlink(missing_ok=True)
        return False
    save_atomically(digests_file, np.array(digests, dtype=DIGEST_DTYPE))
    return True


def mark_used(entry: tuple[Path, Path]) -> None:
    """Note that ``entry`` was just used: the entries removed to make room are the others."""
    with contextlib.suppress(OSError):  # a read-only cache: nothing is removed either
        os.utime(entry[0])


def _make_room(root: Path, keep_at_most: int) -> None:
    """Remove the least recently used entries until the rest take at most ``keep_at_most`` bytes.

    A process that has an entry mapped keeps reading it after the removal (the file
    lives on until it is unmapped).
    """
    try:
        entries = [(f.stat().st_mtime, f.stat().st_size, f) for f in root.glob("inputs-*.npy")
                   if not f.name.endswith("-digests.npy")]
    except OSError:
        return
    total = sum(size for _, size, _ in entries)
    for _, size, inputs_file in sorted(entries):
        if total <= keep_at_most:
            break
        for f in (inputs_file, _digests_file(inputs_file)):
            f.unlink(missing_ok=True)
        total -= size
