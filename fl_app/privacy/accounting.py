"""Accounting across rounds: Opacus accountants, their state as JSON, calibration."""

from __future__ import annotations

import json
import math
import warnings
from functools import lru_cache
from typing import TYPE_CHECKING

from fl_app.errors import ConfigError, FLAppError
from fl_app.privacy.sampling import planned_steps, sample_rate
from fl_app.privacy.settings import (
    KEY_ACCOUNTANT,
    KEY_NOISE_MULTIPLIER,
    KEY_TARGET_EPSILON,
    DPSettings,
    check_accountant,
    check_delta_range,
    check_target_epsilon,
    resolve_delta,
)
from fl_app.task import TrainSettings

if TYPE_CHECKING:
    from opacus.accountants import IAccountant

# Opacus is imported where an accountant is made, not at import: every process of a run
# (each client actor, the server, every CLI) imports this module through the config
# rules, and importing Opacus (and torch.distributed with it) costs ~1.6 s there.

#: A target epsilon whose calibrated noise multiplier exceeds this is refused: the
#: noise on each coordinate would then be 100 times the largest clipped
#: per-example gradient norm ``C``, and the update would carry no signal.
MAX_NOISE_MULTIPLIER = 100.0

#: Opacus' binary search stops within this of the target epsilon (from below).
EPSILON_TOLERANCE = 0.01


class AccountantStateError(FLAppError, ValueError):
    """A stored accountant state that cannot be read back or belongs to another accountant."""




def new_accountant(kind: str) -> IAccountant:
    """Return a fresh Opacus accountant of ``kind`` (checked against :func:`accountant_names`)."""
    from opacus.accountants import create_accountant

    return create_accountant(check_accountant(kind))


def load_accountant(state_json: str | None, kind: str) -> IAccountant:
    """Return an accountant of ``kind`` with the history stored by :func:`dump_accountant`.

    ``None`` (the client never trained) gives a fresh accountant. Raises
    :class:`AccountantStateError` if the state is unreadable or was written by
    another kind of accountant.
    """
    accountant = new_accountant(kind)
    if state_json is None:
        return accountant
    try:
        state = json.loads(state_json)
        mechanism = state["mechanism"]
        history = [(float(sigma), float(q), int(steps)) for sigma, q, steps in state["history"]]
    except (ValueError, KeyError, TypeError) as error:
        raise AccountantStateError(
            f"stored accountant state {state_json[:80]!r} is not valid ({error}); it should "
            "be the string dump_accountant() returned in an earlier round") from None
    if mechanism != kind:
        raise AccountantStateError(
            f"stored accountant state is from a {mechanism!r} accountant but {KEY_ACCOUNTANT} "
            f"is {kind!r}; keep one accountant for the whole run")
    if any(sigma <= 0 or not 0 < q <= 1 or steps < 1 for sigma, q, steps in history):
        raise AccountantStateError(f"stored accountant history {history} has an entry "
                                   "outside sigma > 0, 0 < q <= 1, steps >= 1")
    accountant.load_state_dict({"history": history, "mechanism": mechanism})
    return accountant


def dump_accountant(accountant: IAccountant) -> str:
    """Return the accountant's state as a JSON string (fits a Flower ``ConfigRecord``).

    ``{"mechanism": "rdp", "history": [[noise_multiplier, sample_rate, num_steps], ...]}``;
    floats survive the round trip exactly.
    """
    history = [[float(sigma), float(q), int(steps)] for sigma, q, steps in accountant.history]
    return json.dumps({"mechanism": accountant.mechanism(), "history": history})


def epsilon_of(accountant: IAccountant, delta: float) -> float:
    """Return the epsilon spent so far at ``delta`` (0.0 before the first step)."""
    if len(accountant.history) == 0:
        return 0.0
    return float(accountant.get_epsilon(delta=delta))


def epsilon_after_round(accountant: IAccountant, dp: DPSettings, num_examples: int,
                        settings: TrainSettings, noise_multiplier: float | None = None) -> float:
    """Return the epsilon the client would have after one more round (accountant unchanged).

    Compare with ``dp.max_epsilon`` before training to keep within the budget.
    """
    sigma = dp.noise_multiplier if noise_multiplier is None else noise_multiplier
    return epsilon_after_steps(accountant, sigma, sample_rate(num_examples, settings.batch_size),
                               planned_steps(num_examples, settings, 1),
                               resolve_delta(dp, num_examples))


def epsilon_after_steps(accountant: IAccountant, noise_multiplier: float, rate: float,
                        steps: int, delta: float) -> float:
    """The epsilon at ``delta`` after ``steps`` more ``(noise_multiplier, rate)`` steps.

    ``accountant`` itself is left unchanged (a copy takes the steps).
    """
    trial = new_accountant(accountant.mechanism())
    trial.load_state_dict({"history": list(accountant.history),
                           "mechanism": accountant.mechanism()})
    for _ in range(steps):
        trial.step(noise_multiplier=noise_multiplier, sample_rate=rate)
    return epsilon_of(trial, delta)


def noise_for_target_epsilon(target_epsilon: float, delta: float, sample_rate: float,
                             total_steps: int, accountant: str) -> float:
    """Return the noise multiplier reaching ``target_epsilon`` after ``total_steps`` steps.

    Opacus' ``get_noise_multiplier`` (binary search; the epsilon reached lies in
    ``[target - 0.01, target]``). ``total_steps`` = rounds the client is expected
    to train x local epochs x steps per epoch (:func:`planned_steps`). Raises a
    :class:`ConfigError` on ``dp-target-epsilon`` when no sensible noise reaches
    the target.
    """
    check_target_epsilon(target_epsilon)
    check_delta_range(delta)
    check_accountant(accountant)
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1]; got {sample_rate}")
    if total_steps < 1:
        raise ConfigError(
            KEY_TARGET_EPSILON, target_epsilon, "a target over at least one planned step",
            f"Got total_steps={total_steps} (rounds x local-epochs x steps per epoch): with no "
            "step there is nothing to calibrate. Plan at least one round, or set "
            f"{KEY_NOISE_MULTIPLIER} instead.")
    return _calibrated_noise(float(target_epsilon), float(delta), float(sample_rate),
                             int(total_steps), accountant)


@lru_cache(maxsize=256)
def _calibrated_noise(target_epsilon: float, delta: float, rate: float, total_steps: int,
                      accountant: str) -> float:
    from opacus.accountants.utils import get_noise_multiplier

    setting = (f"delta={delta:.3g}, sample rate q={rate:.4g}, {total_steps} steps, "
               f"{accountant!r} accountant")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sigma = get_noise_multiplier(
                target_epsilon=target_epsilon, target_delta=delta, sample_rate=rate,
                steps=total_steps, accountant=accountant, epsilon_tolerance=EPSILON_TOLERANCE)
    except ValueError:
        sigma = math.inf  # Opacus gives up past sigma = 1e6: "the privacy budget is too low"
    except (RuntimeError, ArithmeticError) as error:
        raise ConfigError(
            KEY_TARGET_EPSILON, target_epsilon, "a target the accountant can calibrate",
            f"The {accountant!r} accountant failed numerically ({error}) with {setting}: so few "
            f"steps at so large an epsilon are out of its range. Lower {KEY_TARGET_EPSILON}, "
            f"plan more rounds, or set {KEY_ACCOUNTANT}='rdp'.") from None
    if sigma > MAX_NOISE_MULTIPLIER:
        raise ConfigError(
            KEY_TARGET_EPSILON, target_epsilon, "a target reachable with a noise multiplier <= "
            f"{MAX_NOISE_MULTIPLIER:g}",
            f"With {setting} it needs noise_multiplier={sigma:.3g}: the noise would drown "
            f"every update. Raise {KEY_TARGET_EPSILON}, plan fewer rounds or local epochs, or "
            "lower batch-size.")
    return float(sigma)


def resolve_noise_multiplier(dp: DPSettings, num_examples: int, settings: TrainSettings,
                             rounds: int) -> float:
    """Return the client's noise multiplier: calibrated to ``dp.target_epsilon`` if set.

    ``rounds`` is the number of rounds the client is expected to train in.
    """
    if dp.target_epsilon is None:
        return dp.noise_multiplier
    return noise_for_target_epsilon(
        dp.target_epsilon, resolve_delta(dp, num_examples),
        sample_rate(num_examples, settings.batch_size),
        planned_steps(num_examples, settings, rounds), dp.accountant)
