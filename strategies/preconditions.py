"""Preconditions of the robust aggregators, one helper per rule.

Every caller (the Flower strategies, run-config validation, the pure math in
:mod:`strategies.krum`) checks a rule through the helper here, so the rule and
its error message live in one place.
"""

from __future__ import annotations

import numbers

import numpy as np

from strategies.errors import ByzantineSizeError, SelectionSizeError, UpdatesError


def _require_int(name: str, value: object, error: type[ValueError]) -> int:
    # bool is an int subclass, but True clients or f=False is a caller bug.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(f"{name} must be an integer; got {value!r} ({type(value).__name__}).")
    return int(value)


def check_krum_size(num_clients: int, num_byzantine: int) -> None:
    """Raise :class:`ByzantineSizeError` unless Krum can run on ``n`` clients with ``f``.

    Krum (Blanchard et al., NeurIPS 2017) scores each update by its ``n - f - 2``
    nearest other updates and is only Byzantine-resilient for ``n >= 2f + 3``;
    ``f >= 0`` and ``n >= 1`` are checked first.

    >>> check_krum_size(num_clients=7, num_byzantine=2)
    >>> check_krum_size(num_clients=12, num_byzantine=5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    strategies.errors.ByzantineSizeError: Krum needs n >= 2f + 3 clients; got n=12, f=5. ...
    """
    check_min_clients("Krum", num_clients, num_byzantine, 2 * num_byzantine + 3, "2f + 3")


def check_num_selected(num_clients: int, num_selected: int) -> None:
    """Raise :class:`SelectionSizeError` unless ``1 <= m <= n`` (Multi-Krum's ``m``).

    >>> check_num_selected(num_clients=10, num_selected=10)
    >>> check_num_selected(num_clients=10, num_selected=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    strategies.errors.SelectionSizeError: Multi-Krum needs 1 <= m <= n ...; got m=0, n=10. ...
    """
    n = _require_int("num_clients", num_clients, SelectionSizeError)
    m = _require_int("num_selected", num_selected, SelectionSizeError)
    if not 1 <= m <= n:
        raise SelectionSizeError(
            f"Multi-Krum needs 1 <= m <= n updates selected; got m={m}, n={n}. "
            "Use m=1 for Krum, m=n for the plain mean."
        )


def check_update_matrix(updates: object) -> None:
    """Raise :class:`UpdatesError` unless ``updates`` is an ``(n, d)`` float32/float64 array.

    ``d`` must be at least 1; ``n`` is checked by the aggregator's own size rule.

    Finiteness is checked later, by the aggregator, from quantities it computes
    anyway (a separate pass over gigabytes of updates would cost as much as Krum).

    >>> check_update_matrix(np.zeros((3, 4), dtype=np.float32))
    >>> check_update_matrix(np.zeros(4))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    strategies.errors.UpdatesError: updates must be a 2-D array ...; got shape (4,). ...
    """
    if not isinstance(updates, np.ndarray):
        raise UpdatesError(
            f"updates must be a numpy array; got {type(updates).__name__}. "
            "Convert with np.asarray(updates, dtype=np.float32)."
        )
    if updates.ndim != 2:
        raise UpdatesError(
            f"updates must be a 2-D array with one flattened update per row; got shape "
            f"{updates.shape}. Stack the clients' updates with np.stack."
        )
    if updates.shape[1] == 0:
        raise UpdatesError(
            f"updates must have at least one column; got shape {updates.shape}. "
            "Check that the model has parameters and that they were flattened."
        )
    if updates.dtype not in (np.float32, np.float64):
        raise UpdatesError(
            f"updates must be float32 or float64; got {updates.dtype}. "
            "Convert with updates.astype(np.float32)."
        )


def check_min_clients(rule: str, num_clients: int, num_byzantine: int, minimum: int,
                      formula: str) -> None:
    """Raise :class:`ByzantineSizeError` unless ``n >= minimum`` (``formula`` in terms of f).

    The shared check of the robust rules' size conditions (``n >= 2f + 1`` for the
    median, ``n >= 4f + 3`` for Bulyan, ...); ``f >= 0`` and ``n >= 1`` first.

    >>> check_min_clients("median", 5, 2, 5, "2f + 1")
    >>> check_min_clients("median", 4, 2, 5, "2f + 1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    strategies.errors.ByzantineSizeError: median needs n >= 2f + 1 clients; got n=4, f=2. ...
    """
    n = _require_int("num_clients", num_clients, ByzantineSizeError)
    f = _require_int("num_byzantine", num_byzantine, ByzantineSizeError)
    if f < 0:
        raise ByzantineSizeError(
            f"num-byzantine must be >= 0; got f={f}. Declare how many clients may be "
            "Byzantine (0 if you trust them all)."
        )
    if n < 1:
        raise ByzantineSizeError(
            f"{rule} needs at least one client; got n={n}. Check that clients answered "
            "this round."
        )
    if n < max(minimum, 1):
        raise ByzantineSizeError(
            f"{rule} needs n >= {formula} clients; got n={n}, f={f}. Sample more clients "
            "per round or declare a smaller num-byzantine."
        )
