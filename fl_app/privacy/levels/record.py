"""Record-level DP (``dp-level = 'record'``): DP-SGD in every honest client.

Abadi et al., "Deep Learning with Differential Privacy" (CCS 2016): per-example
clipping to ``dp-max-grad-norm``, Gaussian noise, Poisson sampling, accounted per
client across its rounds (:mod:`fl_app.privacy`,
:func:`~fl_app.privacy.client_round.private_round`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fl_app.errors import ConfigError
from fl_app.privacy.accounting import resolve_noise_multiplier
from fl_app.privacy.client_round import RoundOutcome, private_round
from fl_app.privacy.levels import DPLevel, register_dp_level
from fl_app.privacy.settings import resolve_delta


def record_level_round(model: Any, x: Any, y: Any, settings: Any, dp: Any, clipping_norm: float,
                       planned_rounds: int, accountant_state: str | None, generator: Any,
                       num_clients: int) -> RoundOutcome:
    """DP-SGD for one round (``clipping_norm`` and ``num_clients`` are the client level's)."""
    return private_round(model, x, y, settings, dp, planned_rounds, accountant_state, generator)


def record_calibration_errors(dp: Any, settings: Any, planned_rounds: int, num_clients: int,
                              sampled: int, sizes: Callable[[], Iterable[int]]
                              ) -> list[ConfigError]:
    """Each client's delta and noise multiplier are its own N's: every distinct N is tried."""
    errors: dict[str, ConfigError] = {}
    for size in sorted(set(sizes())):
        try:
            resolve_delta(dp, size)
            resolve_noise_multiplier(dp, size, settings, planned_rounds)
        except ConfigError as exc:
            errors.setdefault(exc.key, exc)
    return list(errors.values())


register_dp_level(DPLevel(
    "record", record_level_round, unit="one example of one client's data",
    protected_from="anyone who sees the client's updates (the server too, on a real device)",
    not_protected_from="no one, for that example (other examples of the client may leak "
                       "through many records alike)", robust_rules=True,
    # the unit is an example: delta against the client's own N
    delta_of=lambda dp, num_clients, num_examples: resolve_delta(dp, num_examples),
    calibration_errors=record_calibration_errors))
