"""One honest client's DP-SGD round, the whole privacy path in one call.

:func:`private_round` loads the client's accountant (the history of every round it
trained in), resolves its noise multiplier and delta for its ``N`` examples,
checks the budget (``dp-max-epsilon``: a round that would pass it is not trained
and not charged), trains with DP-SGD and returns the accountant's new state. The
ClientApp only decides where the state and the randomness come from.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from fl_app.privacy.accounting import (
    dump_accountant,
    epsilon_after_round,
    epsilon_of,
    load_accountant,
    resolve_noise_multiplier,
)
from fl_app.privacy.settings import KEY_MAX_EPSILON, DPSettings, resolve_delta
from fl_app.privacy.training import train_private
from fl_app.task import TrainSettings


@dataclass(frozen=True)
class RoundOutcome:
    """What a private round did: trained or not, its loss, the epsilon spent, the state."""

    trained: bool
    loss: float  # NaN when not trained
    epsilon: float  # cumulative over every round trained so far
    accountant: str  # the accountant's state after the round (JSON), to keep for the next
    status: str = ""  # why it did not train


def private_round(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings,
                  dp: DPSettings, planned_rounds: int, accountant_state: str | None,
                  generator: torch.Generator) -> RoundOutcome:
    """Train ``model`` in place for one round of DP-SGD, within the budget; say what happened.

    ``accountant_state`` is what an earlier round returned (``None`` before the
    first); ``planned_rounds`` calibrates a ``dp-target-epsilon``; ``generator``
    draws the masks and the noise (:mod:`fl_app.privacy.randomness`).
    """
    num_examples = len(y)
    accountant = load_accountant(accountant_state, dp.accountant)
    noise = resolve_noise_multiplier(dp, num_examples, settings, planned_rounds)
    delta = resolve_delta(dp, num_examples)
    if dp.max_epsilon is not None:
        next_epsilon = epsilon_after_round(accountant, dp, num_examples, settings, noise)
        if next_epsilon > dp.max_epsilon:
            return RoundOutcome(
                False, math.nan, epsilon_of(accountant, delta), dump_accountant(accountant),
                f"DP budget: training would reach epsilon {next_epsilon:.3f} > "
                f"{KEY_MAX_EPSILON} {dp.max_epsilon}")
    loss, _ = train_private(model, x, y, settings, dataclasses.replace(dp, noise_multiplier=noise),
                            accountant, generator)
    return RoundOutcome(True, loss, epsilon_of(accountant, delta), dump_accountant(accountant))
