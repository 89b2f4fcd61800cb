"""Krum and Multi-Krum on a matrix of client updates (numpy only, no Flower).

Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine Learning with Adversaries:
Byzantine Tolerant Gradient Descent", NeurIPS 2017.

Symbols:

- ``n``: number of updates, one row of ``updates`` per client;
- ``f``: number of Byzantine clients the defender *declares* (``num_byzantine``);
  it may differ from the number actually present;
- ``d_i``: the update of client ``i``, a vector of ``d`` floats;
- ``m``: number of updates Multi-Krum averages (``num_selected``).

Formula::

    score(i) = sum over j in N(i) of ||d_i - d_j||^2

where ``N(i)`` holds the ``n - f - 2`` updates nearest to ``d_i`` among the *other*
updates (``j != i``). Krum returns the update with the lowest score; Multi-Krum(m)
averages the ``m`` lowest. The rule needs ``n >= 2f + 3``
(:func:`strategies.preconditions.check_krum_size`).

Conventions: the ``n - f - 2`` nearest others, as in the paper and in Flower (ByzFL
uses ``n - f - 1``); ties in score go to the lower row index; identical updates are
at distance exactly 0.

Numerics. ``||a - b||^2 = ||a'||^2 + ||b'||^2 - 2 <a', b'>`` with ``a' = a - r``
for a reference row ``r``, so all distances come from one Gram matrix, the cost of
one BLAS ``syrk``. A plain float32 Gram of the raw rows is not exact enough: when
updates are clustered (a large common vector plus small differences) the three
terms nearly cancel and the error exceeds the distance itself. Hence:

1. ``r`` is a medoid-like row chosen on a sample of columns, so the centered rows
   are as short as the distances between them;
2. the columns are processed in chunks of ``_CHUNK_COLUMNS``; each chunk's Gram is
   a float32 ``syrk`` of the centered chunk and is accumulated in float64, which
   bounds float32 rounding to one chunk and keeps extra memory at one chunk;
3. a rounding-error bound is computed for every distance; if some row's score (or
   distance, for :func:`pairwise_sq_distances`) may be off by more than
   ``_RELATIVE_TOLERANCE``, the pass is redone in float64 around a better
   reference, and rows still in doubt are recomputed by direct differences;
4. rows that may be identical (distance within its error bound of 0) are compared
   exactly and, if equal, set to distance exactly 0.

Every score is then within 1e-5 relative error of float64 brute force (measured:
about 1e-7), for about 1.2 times the cost of one float32 ``X @ X.T`` and one chunk
of extra memory (``benchmarks/bench_krum.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from strategies.errors import UpdatesError
from strategies.preconditions import check_krum_size, check_num_selected, check_update_matrix

# Columns per chunk: big enough for BLAS to run at full speed, small enough that a
# float32 chunk of 100 rows (1.6 MB) stays in cache while syrk reads it.
_CHUNK_COLUMNS = 4096
# Columns sampled to choose the reference row: 16 contiguous blocks of 64 (cheap
# to gather, unlike 1024 scattered columns), spread over the whole update.
_SAMPLE_BLOCKS = 16
_SAMPLE_BLOCK_COLUMNS = 64
# Half the promised 1e-5: the rounding-error bound is an estimate, not a proof.
_RELATIVE_TOLERANCE = 5e-6
# Rows compared for exact equality are compared this many values at a time, so a
# difference early in the rows ends the comparison early.
_EQUALITY_CHUNK = 1 << 16

# (distances, error bounds) -> mask of rows whose result is not accurate enough.
InaccurateRows = Callable[[np.ndarray, np.ndarray], np.ndarray]


def pairwise_sq_distances(updates: np.ndarray) -> np.ndarray:
    """Return the ``(n, n)`` float64 matrix of squared L2 distances between rows.

    The diagonal and the distance between identical rows are exactly 0; every other
    entry is within 1e-5 relative error of float64 brute force.

    >>> pairwise_sq_distances(np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]]))
    array([[ 0., 25.,  0.],
           [25.,  0., 25.],
           [ 0., 25.,  0.]])
    """
    check_update_matrix(updates)
    return _accurate_distances(updates, _inaccurate_distances)


def krum_scores(updates: np.ndarray, num_byzantine: int) -> np.ndarray:
    """Return the ``n`` Krum scores (float64) of the rows of ``updates``.

    ``score(i)`` is the sum of the squared distances from row ``i`` to its
    ``n - f - 2`` nearest other rows, ``f = num_byzantine``; see the module
    docstring. Raises :class:`strategies.errors.ByzantineSizeError` unless
    ``n >= 2f + 3``.

    >>> updates = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [9.0, 9.0]])
    >>> krum_scores(updates, num_byzantine=1)
    array([  2.,   3.,   3.,  10., 243.])
    """
    check_update_matrix(updates)
    check_krum_size(updates.shape[0], num_byzantine)
    num_closest = updates.shape[0] - num_byzantine - 2
    distances = _accurate_distances(
        updates, lambda dist, bound: _inaccurate_scores(dist, bound, num_closest)
    )
    return _scores(distances, num_closest)


def krum_select(updates: np.ndarray, num_byzantine: int, num_selected: int = 1) -> np.ndarray:
    """Return the indices of the ``num_selected`` rows with the lowest Krum scores.

    Indices are ordered by score, lowest first; equal scores go to the lower index.
    ``num_selected=1`` is Krum, larger values are Multi-Krum's selection.

    >>> updates = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [9.0, 9.0]])
    >>> krum_select(updates, num_byzantine=1)
    array([0])
    >>> krum_select(updates, num_byzantine=1, num_selected=3)  # rows 1 and 2 tie
    array([0, 1, 2])
    """
    check_update_matrix(updates)
    check_krum_size(updates.shape[0], num_byzantine)
    check_num_selected(updates.shape[0], num_selected)
    return lowest_scores(krum_scores(updates, num_byzantine), num_selected)


def lowest_scores(scores: np.ndarray, num_selected: int) -> np.ndarray:
    """Return the indices of the ``num_selected`` lowest scores, ties to the lower index.

    >>> lowest_scores(np.array([3.0, 1.0, 1.0, 0.5]), 3)
    array([3, 1, 2])
    """
    return np.argsort(scores, kind="stable")[:num_selected]


def multikrum_aggregate(
    updates: np.ndarray, num_byzantine: int, num_selected: int
) -> np.ndarray:
    """Return the plain float64 mean of the ``num_selected`` rows Multi-Krum selects.

    >>> updates = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [9.0, 9.0]])
    >>> multikrum_aggregate(updates, num_byzantine=1, num_selected=2)
    array([0.5, 0. ])
    """
    selected = krum_select(updates, num_byzantine, num_selected)
    # Accumulate row by row: indexing updates[selected] would copy m full rows.
    total = np.zeros(updates.shape[1], dtype=np.float64)
    for row in selected:
        total += updates[row]
    return total / len(selected)


# --------------------------------------------------------------------------- scores
def scores_from_distances(distances: np.ndarray, num_closest: int) -> np.ndarray:
    """Krum scores from a matrix of squared distances: each row's ``num_closest`` others.

    >>> scores_from_distances(np.array([[0.0, 1.0, 4.0], [1.0, 0.0, 9.0], [4.0, 9.0, 0.0]]), 1)
    array([1., 1., 4.])
    """
    return _scores(distances, num_closest)


def _scores(distances: np.ndarray, num_closest: int) -> np.ndarray:
    others = distances.copy()
    np.fill_diagonal(others, np.inf)
    # Sorting before summing makes rows with equal distance multisets (identical
    # updates) get bitwise-equal scores, so their tie goes to the lower index.
    return np.sort(others, axis=1)[:, :num_closest].sum(axis=1)


def _inaccurate_scores(dist: np.ndarray, bound: np.ndarray, num_closest: int) -> np.ndarray:
    """Rows whose score may be off by more than the relative tolerance.

    With true distances within ``bound`` of ``dist``, the true score differs from the
    computed one by at most the larger of the bounds summed over the neighbours
    chosen from ``dist`` and over those chosen from ``dist - bound``.
    """
    error = np.maximum(
        _neighbour_bound_sum(dist, bound, num_closest),
        _neighbour_bound_sum(dist - bound, bound, num_closest),
    )
    return error > _RELATIVE_TOLERANCE * _scores(dist, num_closest)


def _neighbour_bound_sum(
    dist: np.ndarray, bound: np.ndarray, num_closest: int
) -> np.ndarray:
    others = dist.copy()
    np.fill_diagonal(others, np.inf)
    nearest = np.argsort(others, axis=1, kind="stable")[:, :num_closest]
    return np.take_along_axis(bound, nearest, axis=1).sum(axis=1)


def _inaccurate_distances(dist: np.ndarray, bound: np.ndarray) -> np.ndarray:
    return np.any(bound > _RELATIVE_TOLERANCE * dist, axis=1)


# ------------------------------------------------------------------------ distances
def _accurate_distances(updates: np.ndarray, inaccurate_rows: InaccurateRows) -> np.ndarray:
    """Squared distances, refined until ``inaccurate_rows`` flags no row."""
    if updates.shape[0] == 0:
        return np.zeros((0, 0))
    sample = _column_sample(updates)
    # Overflow and NaN are detected from the result, not warned about on the way.
    with np.errstate(over="ignore", invalid="ignore"):
        reference = updates[_medoid(_sample_distances(sample))]
        dist, bound = _centered_gram_distances(updates, reference, np.float32)
    if not np.all(np.isfinite(dist)):
        _raise_if_not_finite(updates)
        dist, bound = _float64_distances(updates, reference)  # float32 overflowed
    identical_groups = _identical_groups(updates, sample, dist, bound)
    _tie_identical_rows(dist, bound, identical_groups)
    inaccurate = inaccurate_rows(dist, bound)
    if inaccurate.any():
        # A float64 pass around the medoid of the full-data distances.
        dist, bound = _float64_distances(updates, updates[_medoid(dist)])
        _tie_identical_rows(dist, bound, identical_groups)
        inaccurate = inaccurate_rows(dist, bound)
    if inaccurate.any():
        _exact_rows(updates, dist, np.flatnonzero(inaccurate))
    return dist


def _float64_distances(
    updates: np.ndarray, reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(over="ignore", invalid="ignore"):
        dist, bound = _centered_gram_distances(updates, reference, np.float64)
    if not np.all(np.isfinite(dist)):
        raise UpdatesError(
            "updates are too large to square in float64 (norms above ~1e154); "
            "check the clients' training, it has diverged."
        )
    return dist, bound


def _centered_gram_distances(
    updates: np.ndarray, reference: np.ndarray, compute_dtype: type[np.floating]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from the chunked Gram matrix of ``updates - reference``, and error bounds.

    The bound on the error of distance ``(a, b)`` has two terms, with ``u`` the unit
    roundoff of ``compute_dtype``, ``k`` the chunk width, ``N_a`` the squared norm of
    the centered row and ``Q_a`` the sum over chunks of its squared chunk norm:

    - rounding inside each chunk's ``syrk``, about ``u sqrt(k)`` per term, adding up
      like a random walk over chunks: ``2 u sqrt(k) (sqrt(Q_a) + sqrt(Q_b))``;
    - rounding of the centered values: ``3 u sqrt(dist (N_a + N_b))``.
    """
    num_rows, num_columns = updates.shape
    # Subtract in the wider type so the centered value is rounded once, at the end.
    subtract_dtype = np.promote_types(updates.dtype, compute_dtype)
    gram = np.zeros((num_rows, num_rows))
    sum_sq_chunk_norms = np.zeros(num_rows)
    buffer = np.empty((num_rows, min(_CHUNK_COLUMNS, num_columns)), dtype=compute_dtype)
    for start in range(0, num_columns, _CHUNK_COLUMNS):
        stop = min(start + _CHUNK_COLUMNS, num_columns)
        chunk = buffer[:, : stop - start]
        np.subtract(updates[:, start:stop], reference[start:stop], out=chunk,
                    dtype=subtract_dtype, casting="same_kind")
        chunk_gram = chunk @ chunk.T  # numpy hands A @ A.T to BLAS syrk
        gram += chunk_gram
        sum_sq_chunk_norms += np.diagonal(chunk_gram).astype(np.float64) ** 2
    sq_norms = np.diagonal(gram).copy()
    norm_sums = sq_norms[:, None] + sq_norms[None, :]
    dist = norm_sums - 2.0 * gram
    np.maximum(dist, 0.0, out=dist)
    np.fill_diagonal(dist, 0.0)
    unit_roundoff = float(np.finfo(compute_dtype).eps) / 2
    root_q = np.sqrt(sum_sq_chunk_norms)
    bound = 2 * unit_roundoff * np.sqrt(min(_CHUNK_COLUMNS, num_columns)) * (
        root_q[:, None] + root_q[None, :]
    ) + 3 * unit_roundoff * np.sqrt(dist * norm_sums)
    np.fill_diagonal(bound, 0.0)
    return dist, bound


def _exact_rows(updates: np.ndarray, dist: np.ndarray, rows: np.ndarray) -> None:
    """Overwrite ``dist`` for ``rows`` by float64 sums of squared differences."""
    exact = np.zeros((len(rows), updates.shape[0]))
    for start in range(0, updates.shape[1], _CHUNK_COLUMNS):
        chunk = updates[:, start : start + _CHUNK_COLUMNS].astype(np.float64)
        for position, row in enumerate(rows):
            difference = chunk - chunk[row]
            exact[position] += np.einsum("ij,ij->i", difference, difference)
    dist[rows, :] = exact
    dist[:, rows] = exact.T


def _raise_if_not_finite(updates: np.ndarray) -> None:
    bad_rows = [row for row in range(updates.shape[0]) if not np.isfinite(updates[row]).all()]
    if bad_rows:
        raise UpdatesError(
            f"updates of rows {bad_rows} contain NaN or infinity; reject those clients "
            "before aggregating (a diverged client often sends inf)."
        )


# -------------------------------------------------------------- reference and ties
def _column_sample(updates: np.ndarray) -> np.ndarray:
    """Copy a few blocks of columns, spread over the whole update, to float64."""
    num_columns = updates.shape[1]
    if num_columns <= _SAMPLE_BLOCKS * _SAMPLE_BLOCK_COLUMNS:
        return updates.astype(np.float64)
    starts = np.linspace(0, num_columns - _SAMPLE_BLOCK_COLUMNS, _SAMPLE_BLOCKS).astype(int)
    blocks = [updates[:, start : start + _SAMPLE_BLOCK_COLUMNS] for start in starts]
    return np.concatenate(blocks, axis=1).astype(np.float64)


def _sample_distances(sample: np.ndarray) -> np.ndarray:
    centered = sample - sample.mean(axis=0)
    gram = centered @ centered.T
    sq_norms = np.diagonal(gram)
    return sq_norms[:, None] + sq_norms[None, :] - 2.0 * gram


def _medoid(dist: np.ndarray) -> int:
    """Row with the least summed distance to its nearest half of the others.

    Centering on it keeps the centered rows of the majority cluster short, whatever
    a minority of outliers does (the mean would be dragged towards them).
    """
    num_rows = dist.shape[0]
    if num_rows <= 2:
        return 0
    return int(np.argmin(_scores(dist, max(1, (num_rows - 1) // 2))))


def _identical_groups(
    updates: np.ndarray, sample: np.ndarray, dist: np.ndarray, bound: np.ndarray
) -> list[list[int]]:
    """Group exactly equal rows, comparing only pairs whose distance may be 0."""
    num_rows = updates.shape[0]
    parent = list(range(num_rows))

    def root(row: int) -> int:
        while parent[row] != row:
            row = parent[row]
        return row

    for first, second in np.argwhere(np.triu(dist <= bound, k=1)):
        first_root, second_root = root(int(first)), root(int(second))
        # Equality is transitive: once joined, a pair needs no comparison.
        if first_root != second_root and _rows_equal(
            sample[first], sample[second]
        ) and _rows_equal(updates[first], updates[second]):
            parent[max(first_root, second_root)] = min(first_root, second_root)
    groups: dict[int, list[int]] = {}
    for row in range(num_rows):
        groups.setdefault(root(row), []).append(row)
    return [members for members in groups.values() if len(members) > 1]


def _rows_equal(first: np.ndarray, second: np.ndarray) -> bool:
    return all(
        np.array_equal(first[start : start + _EQUALITY_CHUNK],
                       second[start : start + _EQUALITY_CHUNK])
        for start in range(0, len(first), _EQUALITY_CHUNK)
    )


def _tie_identical_rows(
    dist: np.ndarray, bound: np.ndarray, groups: list[list[int]]
) -> None:
    """Give identical rows the distances of their first member, and 0 among them."""
    for members in groups:
        first, rest = members[0], members[1:]
        for matrix in (dist, bound):
            matrix[rest, :] = matrix[first, :]
            matrix[:, rest] = matrix[:, [first]]
            matrix[np.ix_(members, members)] = 0.0
