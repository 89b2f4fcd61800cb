"""Helpers shared by the attacks: input checks, the float64 row mean and row repetition.

Symbols used across the package: an update is ``d_i = w_i - w`` flattened to a vector of
length ``d``; the adversary knows ``k`` honest updates stacked as a ``(k, d)`` matrix;
``q`` Byzantine clients take part among the round's ``n`` sampled clients.

Each precondition is checked in exactly one helper here, whose message states the rule and
the values given (STYLE.md item 5).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from attacks.errors import AttackParameterError


def as_update_matrix(honest_updates: np.ndarray) -> np.ndarray:
    """Return ``honest_updates`` as an ndarray of shape ``(k, d)`` with ``k, d >= 1``.

    A single update must be passed as one row (``own_update[None, :]``), so that the
    number of known updates ``k`` is never guessed from a 1-D shape.
    """
    updates = np.asarray(honest_updates)
    if updates.ndim != 2 or updates.shape[0] < 1 or updates.shape[1] < 1:
        raise AttackParameterError(
            "honest updates must be a (k, d) matrix with k >= 1 rows and d >= 1 columns; "
            f"got shape {updates.shape}. Pass a single update as update[None, :]."
        )
    return updates


def float_dtype(array: np.ndarray) -> np.dtype:
    """Return ``array``'s dtype if it is a float type, else float64 (the dtype attacks return)."""
    return array.dtype if np.issubdtype(array.dtype, np.floating) else np.dtype(np.float64)


def row_mean(updates: np.ndarray) -> np.ndarray:
    """Mean over the rows of a ``(k, d)`` matrix, accumulated and returned in float64.

    ``mu = (1/k) * sum_i d_i``. float64 keeps the mean of many float32 updates accurate.
    """
    return np.mean(as_update_matrix(updates), axis=0, dtype=np.float64)


def check_nonnegative(name: str, value: float, attack: str) -> float:
    """Return ``value`` as a float if it is a finite real ``>= 0``; raise otherwise."""
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise AttackParameterError(f"{attack} needs a finite {name} >= 0; got {name}={value!r}.")
    return float(value)


def check_count(name: str, value: int, minimum: int) -> int:
    """Return ``value`` as an int if it is an integer ``>= minimum``; raise otherwise."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise AttackParameterError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def check_byzantine_count(
    num_clients: int,
    num_attackers: int,
    names: tuple[str, str] = ("n", "q"),
    hint: str = "",
) -> tuple[int, int]:
    """Return ``(n, q)`` as ints if ``n >= 1`` and ``0 <= q <= n``; raise otherwise.

    ``names`` are how the message calls ``n`` and ``q``; ``hint`` says how to fix.
    """
    n = check_count(names[0], num_clients, 1)
    q = check_count(names[1], num_attackers, 0)
    if q > n:
        raise AttackParameterError(
            f"the Byzantine count must satisfy {names[1]} <= {names[0]}; got "
            f"{names[0]}={n}, {names[1]}={q}. {hint}".rstrip()
        )
    return n, q


def repeat_rows(update: np.ndarray, num_attackers: int) -> np.ndarray:
    """Stack ``num_attackers`` copies of the vector ``update`` into a ``(q, d)`` matrix."""
    q = check_count("num_attackers", num_attackers, 0)
    return np.tile(update, (q, 1))
