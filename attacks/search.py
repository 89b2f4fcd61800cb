"""The two searches the optimised attacks share: a bisection and ByzFL's line search.

Both look for one scalar: how far an attack may go (:func:`largest_feasible`, the
bisection of Shejwalkar and Houmansadr) or how far it should go to do the most damage
(:func:`line_search_max`, the expansion-then-contraction search of ByzFL's optimised
attacks).
"""

from __future__ import annotations

from collections.abc import Callable


def largest_feasible(feasible: Callable[[float], bool], initial: float,
                     tolerance: float = 1e-5) -> float:
    """The largest ``gamma`` in ``[0, 2 * initial)`` with ``feasible(gamma)``, by bisection.

    Shejwalkar and Houmansadr's Algorithm 1 (NDSS 2021): from ``gamma = initial``, step
    up by half the current step while feasible, down while not, halving the step, until
    two consecutive candidates differ by at most ``tolerance``; returns the last feasible
    candidate (0 when none was: the attack then sends the mean itself).

    >>> round(largest_feasible(lambda g: g <= 3.0, 10.0), 4)
    3.0
    >>> largest_feasible(lambda g: False, 10.0)
    0.0
    """
    gamma, step, best = initial, initial, 0.0
    while abs(best - gamma) > tolerance:
        if feasible(gamma):
            best = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return best


def line_search_max(objective: Callable[[float], float], start: float, delta: float,
                    evaluations: int, ratio: float = 0.8) -> float:
    """The argument of the largest ``objective`` found in ``evaluations`` calls.

    ByzFL's search for its optimised IPM and ALIE (Allouah et al., AISTATS 2023):
    expansion (from ``start``, step ``delta``, doubled after every improvement, until a
    step fails, which shrinks it by ``ratio``), then contraction (steps from the best
    point, shrunk by ``ratio`` after each try, kept when they improve).

    >>> round(line_search_max(lambda x: -(x - 7.0) ** 2, 0.0, 1.0, 40), 2)
    7.0
    """
    best_x, best_y = start, objective(start)
    left = evaluations - 1
    while left > 0:  # expansion
        proposal = best_x + delta
        value = objective(proposal)
        left -= 1
        if value > best_y:
            best_x, best_y, delta = proposal, value, delta * 2
        else:
            delta *= ratio
            break
    while left > 0:  # contraction
        proposal = best_x + delta
        value = objective(proposal)
        left -= 1
        if value > best_y:
            best_x, best_y = proposal, value
        delta *= ratio
    return best_x
