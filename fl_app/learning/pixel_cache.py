"""The on-disk cache of decoded image pixels, shared by the processes of one machine.

Simulated clients run in several processes (Ray actors), and a partition sampled
in two rounds may land on two of them; the cache makes every image file decoded
once per machine instead of once per process. An entry is the uint8 pixels of a
list of files (a quarter of the float inputs' bytes), named by the files
themselves, so a changed image is never served stale.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def decode_cache_dir() -> Path | None:
    """Where decoded images and partition tables are shared between processes (None: off).

    ``$FL_APP_CACHE_DIR``, default ``~/.cache/fl_app``; ``FL_APP_CACHE_DIR=off``
    disables it.
    """
    value = os.environ.get("FL_APP_CACHE_DIR", "")
    if value.lower() == "off":
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "fl_app"


def cache_file(dataset: str, split: str, paths: Sequence[str]) -> Path | None:
    """The entry holding the pixels of image files ``paths``, in order (None: cache off)."""
    root = decode_cache_dir()
    if root is None:
        return None
    return root / f"{dataset}-{split}-pixels-{files_digest(dataset, paths)}.npy"


def files_digest(dataset: str, paths: Sequence[str]) -> str:
    """A digest of image files ``paths``, in order: each one's path, size and modification time.

    Adding, removing or replacing an image changes it, so an entry named or checked
    by it is never read stale.
    """
    digest = hashlib.blake2b(dataset.encode(), digest_size=16)
    for path in paths:
        st = os.stat(path)
        digest.update(f"|{path}|{st.st_size}|{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def read_cached(path: Path | None, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The uint8 pixels of shape ``shape`` stored at ``path``, or None if it holds no such thing."""
    array = load_atomically_saved(path)
    if array is None or array.shape != shape or array.dtype != np.uint8:
        return None
    return torch.from_numpy(array)


def write_cached(path: Path, pixels: torch.Tensor) -> None:
    """Store ``pixels`` at ``path`` atomically; a disk that refuses only costs decoding again."""
    save_atomically(path, pixels.numpy())


def save_atomically(path: Path, array: np.ndarray) -> None:
    """Store ``array`` at ``path`` as ``.npy``, whole or not at all; a refusing disk is ignored.

    A cache entry only saves work: failing to write one costs computing it again.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)  # atomic: a reader sees the whole file or none
    except OSError:
        pass


def load_atomically_saved(path: Path | None) -> np.ndarray | None:
    """The array :func:`save_atomically` stored at ``path``; None if none, or unreadable.

    An unreadable entry is a miss: it is computed again and overwritten.
    """
    if path is None or not path.exists():
        return None
    try:
        return np.load(path)
    except (OSError, ValueError):
        return None
