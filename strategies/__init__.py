"""Aggregation: pure math on update matrices plus thin Flower strategies on top.

Every rule and pre-aggregation, by name, as pure numpy (:mod:`strategies.rules`)::

    from strategies import aggregate, preaggregate
    aggregate("median", updates, num_byzantine=2)
"""

from strategies.rules import aggregate, aggregate_detailed, preaggregate, preaggregate_detailed

__all__ = ["aggregate", "aggregate_detailed", "preaggregate", "preaggregate_detailed"]
