"""Exception types of the aggregation strategies, one per family.

Each message says what was wrong, with the values, and how to fix it.
"""

from __future__ import annotations


class StrategyError(Exception):
    """Base class of every error the strategies raise on purpose."""


class ByzantineSizeError(StrategyError, ValueError):
    """Too few clients for the declared number of Byzantine clients, or a bad count.

    Raised by :func:`strategies.preconditions.check_krum_size`, the one place the
    rule ``n >= 2f + 3`` lives.
    """


class SelectionSizeError(StrategyError, ValueError):
    """A Multi-Krum selection size outside ``1 <= m <= n``."""


class UpdatesError(StrategyError, ValueError):
    """Updates that are not a finite ``(n, d)`` floating-point array."""


class UnknownStrategyError(StrategyError, ValueError):
    """A strategy name that is not registered; the message lists the valid ones."""


class RuleParameterError(StrategyError, ValueError):
    """A parameter of an aggregation rule or pre-aggregation outside its allowed values."""
