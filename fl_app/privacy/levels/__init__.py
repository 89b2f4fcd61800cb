"""The DP levels (``dp-level``), one file each, registered by name.

* ``record`` (:mod:`.record`): DP-SGD, each honest client's *examples* protected from
  whoever sees its updates (the package's main model, :mod:`fl_app.privacy`).
* ``client`` (:mod:`.client`): each honest client clips its *whole update* to ``S``
  (``dp-clipping-norm``) and adds ``N(0, sigma^2 S^2)`` before sending: its whole
  dataset protected from whoever sees its updates, the server included.
* ``central`` (:mod:`.central`): Flower's server-side fixed clipping: the server clips
  each update, averages and adds the noise; the clients' datasets are protected from
  whoever sees the *global model*, not from the server. FedAvg only.

A level is a :class:`DPLevel`: its client round (``None``: the clients train without
DP and the server adds it), what it protects and from whom (the README's table), and
the rules it needs. A new level is one file here that calls :func:`register_dp_level`,
plus its import at the bottom of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KEY_DP_LEVEL = "dp-level"
KEY_CLIPPING_NORM = "dp-clipping-norm"
DEFAULT_DP_LEVEL = "record"

# (model, x, y, settings, dp, clipping_norm, planned_rounds, accountant_state, generator,
#  num_clients) -> RoundOutcome; trains `model` (holding the global weights) in place
ClientRound = Callable[..., Any]
# (dp settings, K clients, N examples of the client) -> the delta its epsilon is at
DeltaOf = Callable[[Any, int, int], float]
# (dp settings, train settings, planned rounds, K clients, clients sampled a round,
#  () -> the clients' dataset sizes) -> the ConfigErrors of a delta or a noise calibration
#  no client of this federation could use, at most one per key (the start check's)
CalibrationErrors = Callable[[Any, Any, int, int, int, Callable[[], Any]], list[Any]]


@dataclass(frozen=True)
class DPLevel:
    """A ``dp-level``: who adds the noise, what it protects, from whom."""

    name: str
    client_round: ClientRound | None  # None: the server adds the noise
    unit: str  # what two neighbouring datasets differ in
    protected_from: str  # who cannot learn it
    not_protected_from: str
    robust_rules: bool  # may a robust rule aggregate (does the server see noisy updates)?
    delta_of: DeltaOf  # the delta of a client's guarantee (ConfigError if dp-delta is too big)
    calibration_errors: CalibrationErrors  # checked at start, before round 1


DP_LEVELS: dict[str, DPLevel] = {}


def register_dp_level(level: DPLevel) -> None:
    """Register a DP level under its name."""
    if level.name in DP_LEVELS:
        raise ValueError(f"dp-level {level.name!r} is already registered")
    DP_LEVELS[level.name] = level


# Each level registers itself on import (after the registry above exists).
from fl_app.privacy.levels import central, client, record  # noqa: E402, F401
