"""Per-coordinate order statistics of an update matrix, one chunk of columns at a time.

The coordinate-wise rules (median, trimmed mean, Bulyan's second step) need each
column of the ``(n, d)`` matrix sorted across clients. Sorting a transposed, contiguous
chunk of columns along its last axis is faster than ``np.sort(updates, axis=0)`` and
``np.partition`` alike (measured 0.24 s against 0.33 s and 0.41 s at n = 100, d = 1M
float32; ``np.median`` took 2.8 s) and keeps the extra memory at one chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Columns per chunk: a (1024, n) float32 chunk of 100 clients is 400 KB, in cache.
CHUNK_COLUMNS = 1024

# (sorted chunk of shape (columns, n), float64) -> (columns,) float64
ColumnReducer = Callable[[np.ndarray], np.ndarray]


def reduce_sorted_columns(updates: np.ndarray, reduce: ColumnReducer,
                          rows: np.ndarray | None = None) -> np.ndarray:
    """Apply ``reduce`` to every column of ``updates`` sorted across clients (float64 out).

    ``reduce`` gets a ``(columns, n)`` array whose rows are the columns of a chunk,
    each sorted ascending (in the input's dtype), and returns one float64 per column.
    ``rows`` restricts the clients (Bulyan's chosen ones) without copying the matrix.
    """
    d = updates.shape[1]
    out = np.empty(d, dtype=np.float64)
    for start in range(0, d, CHUNK_COLUMNS):
        stop = min(start + CHUNK_COLUMNS, d)
        block = updates[:, start:stop] if rows is None else updates[rows, start:stop]
        chunk = np.ascontiguousarray(block.T)
        chunk.sort(axis=1)
        out[start:stop] = reduce(chunk)
    return out


def sorted_mean(chunk: np.ndarray, low: int, high: int) -> np.ndarray:
    """The float64 mean of the sorted values ``low .. high - 1`` of every row of ``chunk``."""
    return chunk[:, low:high].mean(axis=1, dtype=np.float64)
