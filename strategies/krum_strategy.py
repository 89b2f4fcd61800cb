"""Krum and Multi-Krum as Flower strategies (math in :mod:`strategies.krum`).

Both are :class:`strategies.fedavg.RuleStrategy` with the ``krum`` / ``multikrum``
rule, so rejection of malformed results, the omniscient hook, pre-aggregation, the
server optimiser and round reports are shared; the size rule ``n >= 2f + 3``
(Blanchard et al., NeurIPS 2017) is checked by
:func:`strategies.preconditions.check_krum_size` before the first round and again
after rejections in every round.
"""

from __future__ import annotations

from typing import Any

from strategies.fedavg import RuleStrategy
from strategies.krum_rules import MULTIKRUM_PARAMS


class MultiKrum(RuleStrategy):
    """Average of the ``num_selected`` updates with the lowest Krum scores.

    ``num_selected = 0`` means ``n - f`` (all but the declared Byzantine count),
    the common choice of El Mhamdi et al. (ICML 2018).
    """

    def __init__(self, *, num_byzantine: int,
                 num_selected: int = MULTIKRUM_PARAMS[0].default, **kwargs: Any) -> None:
        if num_byzantine < 0 or num_selected < 0:
            raise ValueError(f"num_byzantine and num_selected must be >= 0; got "
                             f"f={num_byzantine}, m={num_selected}")
        super().__init__("multikrum", num_byzantine=num_byzantine,
                         params={"m": num_selected}, **kwargs)
        self.num_selected = num_selected

    def __repr__(self) -> str:
        return f"{type(self).__name__}(f={self.num_byzantine}, m={self.num_selected})"


class Krum(RuleStrategy):
    """Krum: the single update with the lowest score (Multi-Krum with m = 1)."""

    def __init__(self, *, num_byzantine: int, **kwargs: Any) -> None:
        super().__init__("krum", num_byzantine=num_byzantine, **kwargs)
        self.num_selected = 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(f={self.num_byzantine}, m=1)"
