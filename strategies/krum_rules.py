"""Krum and Multi-Krum as registered rules (the math is in :mod:`strategies.krum`).

The adapters of the rule registry (:mod:`strategies.rules`) and Multi-Krum's one
declared parameter, ``m`` (run-config key ``multikrum-m``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from strategies.contract import Rule, RuleResult
from strategies.krum import krum_scores, lowest_scores
from strategies.params import Param, at_least
from strategies.preconditions import check_krum_size

MULTIKRUM_PARAMS = (Param("m", 0, "updates Multi-Krum averages; 0: n - f", at_least(0),
                          label="Multi-Krum m"),)


def _krum_rule(updates: np.ndarray, *, num_byzantine: int,
               weights: Sequence[float] | None) -> RuleResult:
    scores = krum_scores(updates, num_byzantine)
    chosen = [int(i) for i in lowest_scores(scores, 1)]
    return RuleResult(np.asarray(updates[chosen[0]], dtype=np.float64), chosen,
                      [float(s) for s in scores])


def _multikrum_rule(updates: np.ndarray, *, num_byzantine: int,
                    weights: Sequence[float] | None,
                    m: int = MULTIKRUM_PARAMS[0].default) -> RuleResult:
    scores = krum_scores(updates, num_byzantine)
    chosen = [int(i) for i in lowest_scores(scores, min(m or len(scores) - num_byzantine,
                                                        len(scores)))]
    return RuleResult(np.asarray(updates[chosen], dtype=np.float64).mean(axis=0), chosen,
                      [float(s) for s in scores])


def _check_multikrum_size(num_clients: int, num_byzantine: int, m: int = 0) -> None:
    check_krum_size(num_clients, num_byzantine)


RULES = (
    Rule("krum", _krum_rule, check_krum_size,
         description="the update nearest its n - f - 2 neighbours (Blanchard et al. 2017)"),
    Rule("multikrum", _multikrum_rule, _check_multikrum_size, MULTIKRUM_PARAMS,
         description="mean of the m lowest Krum scores (El Mhamdi et al. 2018)"),
)
