"""Passes over an ``(n, d)`` update matrix one chunk of columns at a time.

Each chunk (``n x 4096`` values, in cache) is computed in the matrix's own float type
and its per-row results are accumulated across chunks in float64: a float32 matrix of
100 x 1M updates is neither copied to float64 (twice its memory) nor summed over a
million values in float32.
"""

from __future__ import annotations

import numpy as np

CHUNK_COLUMNS = 4096


def weighted_row_sum(updates: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """``coefficients @ updates`` in float64, without a float64 copy of ``updates``.

    >>> weighted_row_sum(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32), np.array([0.5, 1.0]))
    array([3.5, 5. ])
    """
    out = np.empty(updates.shape[1])
    weights = np.asarray(coefficients, dtype=updates.dtype)
    for start in range(0, updates.shape[1], CHUNK_COLUMNS):
        out[start:start + CHUNK_COLUMNS] = weights @ updates[:, start:start + CHUNK_COLUMNS]
    return out


def distances_to(updates: np.ndarray, point: np.ndarray) -> np.ndarray:
    """The L2 distance (float64) of every row of ``updates`` to ``point``.

    >>> distances_to(np.array([[3.0, 4.0], [0.0, 0.0]]), np.zeros(2))
    array([5., 0.])
    """
    sq = np.zeros(updates.shape[0])
    buffer = np.empty((updates.shape[0], min(CHUNK_COLUMNS, updates.shape[1])), updates.dtype)
    for start in range(0, updates.shape[1], CHUNK_COLUMNS):
        chunk = updates[:, start:start + CHUNK_COLUMNS]
        diff = buffer[:, :chunk.shape[1]]
        np.subtract(chunk, point[start:start + CHUNK_COLUMNS], out=diff, casting="unsafe")
        sq += np.einsum("ij,ij->i", diff, diff)
    return np.sqrt(sq)


def weiszfeld_pass(updates: np.ndarray, center: np.ndarray, coefficients: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``z = center + coefficients @ (updates - center)`` and every row's distance to ``z``.

    One read of the data: per chunk, ``updates - center`` is formed in float64 and
    rounded to the updates' type once (so it is exact to that type's precision at the
    scale of the differences, not of the updates), the step and the new differences are
    computed from it in cache, and ``z`` is kept in float64. With ``coefficients``
    summing to one this is the weighted mean of the rows, for any ``center``.

    >>> z, dist = weiszfeld_pass(np.array([[0.0, 0.0], [6.0, 8.0]]), np.zeros(2),
    ...                          np.array([0.5, 0.5]))
    >>> z, dist
    (array([3., 4.]), array([5., 5.]))
    """
    n, d = updates.shape
    z = np.empty(d)
    sq = np.zeros(n)
    weights = np.asarray(coefficients, dtype=updates.dtype)
    buffer = np.empty((n, min(CHUNK_COLUMNS, d)), updates.dtype)
    for start in range(0, d, CHUNK_COLUMNS):
        stop = min(start + CHUNK_COLUMNS, d)
        diff = buffer[:, :stop - start]
        np.subtract(updates[:, start:stop], center[start:stop], out=diff, casting="unsafe")
        step = weights @ diff
        z[start:stop] = center[start:stop] + step
        diff -= step
        sq += np.einsum("ij,ij->i", diff, diff)
    return z, np.sqrt(sq)


def row_norms(updates: np.ndarray) -> np.ndarray:
    """The L2 norm (float64) of every row.

    >>> row_norms(np.array([[3.0, 4.0], [0.0, 1.0]], dtype=np.float32))
    array([5., 1.])
    """
    return distances_to(updates, np.zeros(updates.shape[1]))
