"""DP-SGD settings: the run-config keys, their checks, delta, :class:`DPSettings`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from fl_app.errors import ConfigError, ConfigErrors
from fl_app.privacy.engines import DEFAULT_GRAD_SAMPLE_MODE, GRAD_SAMPLE_MODES, KEY_GRAD_SAMPLE_MODE

KEY_NOISE_MULTIPLIER = "dp-noise-multiplier"
KEY_MAX_GRAD_NORM = "dp-max-grad-norm"
KEY_DELTA = "dp-delta"
KEY_ACCOUNTANT = "dp-accountant"
DEFAULT_ACCOUNTANT = "rdp"  # Opacus' Renyi-DP accountant
KEY_TARGET_EPSILON = "dp-target-epsilon"
KEY_MAX_EPSILON = "dp-max-epsilon"

#: Opacus accountants refused here: ``"gdp"`` is a central-limit approximation that
#: Opacus itself says "can underestimate privacy expenditure".
UNSOUND_ACCOUNTANTS = frozenset({"gdp"})






def accountant_names() -> list[str]:
    """Return the accountants allowed for ``dp-accountant``: Opacus' registry minus unsound ones.

    Read from Opacus' registry, so an accountant registered through
    ``opacus.accountants.register_accountant`` is accepted too.
    """
    from opacus.accountants import registry as accountant_registry  # ~1.6 s: only when asked

    # Opacus keeps its registry in a module-level dict and has no public listing.
    return sorted(set(accountant_registry._ACCOUNTANTS) - UNSOUND_ACCOUNTANTS)


def _check_positive(key: str, value: float, what: str) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else a :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, value, f"a number > 0 ({what})")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(key, value, f"a finite number > 0 ({what})")
    return float(value)


def check_noise_multiplier(value: float) -> float:
    """Return ``value`` if it is a valid ``dp-noise-multiplier`` (finite, > 0)."""
    return _check_positive(KEY_NOISE_MULTIPLIER, value,
                           "the noise std in units of dp-max-grad-norm")


def check_max_grad_norm(value: float) -> float:
    """Return ``value`` if it is a valid ``dp-max-grad-norm`` (finite, > 0)."""
    return _check_positive(KEY_MAX_GRAD_NORM, value,
                           "the L2 norm each example's gradient is clipped to")


def check_target_epsilon(value: float) -> float:
    """Return ``value`` if it is a valid ``dp-target-epsilon`` (finite, > 0)."""
    return _check_positive(KEY_TARGET_EPSILON, value,
                           "the epsilon each client should reach after all its rounds")


def check_max_epsilon(value: float) -> float:
    """Return ``value`` if it is a valid ``dp-max-epsilon`` (finite, > 0)."""
    return _check_positive(KEY_MAX_EPSILON, value, "the epsilon budget of each client")


def check_accountant(name: str) -> str:
    """Return ``name`` if it is an accountant of :func:`accountant_names`."""
    if name == DEFAULT_ACCOUNTANT:  # Opacus' own, always registered: no need to load Opacus
        return name                 # (every config is checked, DP on or off)
    allowed = accountant_names()
    if name not in allowed:
        hint = ("Opacus marks it experimental: it can underestimate epsilon."
                if name in UNSOUND_ACCOUNTANTS else "")
        raise ConfigError(KEY_ACCOUNTANT, name, f"one of {allowed}", hint)
    return name


def check_grad_sample_mode(name: str) -> str:
    """Return ``name`` if it is a registered per-sample-gradient mode."""
    if name not in GRAD_SAMPLE_MODES:
        raise ConfigError(KEY_GRAD_SAMPLE_MODE, name, f"one of {sorted(GRAD_SAMPLE_MODES)}",
                          f"{DEFAULT_GRAD_SAMPLE_MODE!r} is the fastest.")
    return name


def check_delta_range(delta: float) -> float:
    """Return ``delta`` if it is a probability in (0, 1) (the per-client bound comes later)."""
    delta = _check_positive(KEY_DELTA, delta, "a probability below 1 / N")
    if delta >= 1:
        raise ConfigError(KEY_DELTA, delta, "a probability in (0, 1), below 1 / N")
    return delta


def check_delta(delta: float, num_examples: int) -> float:
    """Return ``delta`` if ``0 < delta < 1 / num_examples`` (see the module docstring)."""
    delta = check_delta_range(delta)
    if num_examples < 1:
        raise ValueError(f"a client needs at least one example; got num_examples={num_examples}")
    if delta >= 1.0 / num_examples:
        raise ConfigError(
            KEY_DELTA, delta, f"a value below 1 / N = {1.0 / num_examples:.3g} for this "
            f"client's N = {num_examples} examples",
            "A delta of 1 / N or more allows leaking a whole record; leave dp-delta unset to "
            "use 1 / (10 N) per client.")
    return delta


def default_delta(num_examples: int) -> float:
    """Return ``1 / (10 N)``, the delta used when ``dp-delta`` is unset (module docstring).

    >>> default_delta(500)
    0.0002
    """
    if num_examples < 1:
        raise ValueError(f"a client needs at least one example; got num_examples={num_examples}")
    return 1.0 / (10 * num_examples)


@dataclass(frozen=True)
class DPSettings:
    """DP-SGD settings of an honest client; every field is checked when built.

    ``delta=None`` means :func:`default_delta` of each client's dataset size.
    With ``target_epsilon`` set, the noise multiplier is calibrated by
    :func:`resolve_noise_multiplier` and ``noise_multiplier`` is ignored.
    ``max_epsilon`` is a budget: a client whose epsilon would pass it should stop
    training (see :func:`epsilon_after_round`). ``secure_mode`` draws the noise as
    Opacus' ``secure_mode`` (give :func:`train_private` a CSPRNG generator with it).
    """

    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float | None = None
    accountant: str = DEFAULT_ACCOUNTANT
    target_epsilon: float | None = None
    max_epsilon: float | None = None
    grad_sample_mode: str = DEFAULT_GRAD_SAMPLE_MODE
    secure_mode: bool = False

    def __post_init__(self) -> None:
        errors = dp_settings_errors(self)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ConfigErrors(errors)


def dp_settings_errors(dp: DPSettings) -> list[ConfigError]:
    """Return every problem of ``dp`` that does not depend on a client's data."""
    checks: list[tuple[Callable[[object], object], object]] = [
        (check_noise_multiplier, dp.noise_multiplier),
        (check_max_grad_norm, dp.max_grad_norm),
        (check_accountant, dp.accountant),
        (check_grad_sample_mode, dp.grad_sample_mode),
    ]
    optional = [(check_delta_range, dp.delta), (check_target_epsilon, dp.target_epsilon),
                (check_max_epsilon, dp.max_epsilon)]
    checks += [(check, value) for check, value in optional if value is not None]
    errors: list[ConfigError] = []
    for check, value in checks:
        try:
            check(value)
        except ConfigError as error:
            errors.append(error)
    target, budget = dp.target_epsilon, dp.max_epsilon
    if not errors and target is not None and budget is not None and target > budget:
        errors.append(ConfigError(KEY_TARGET_EPSILON, target, f"at most {KEY_MAX_EPSILON} = "
                                  f"{budget}", "A target above the budget is never reached."))
    return errors


def resolve_delta(dp: DPSettings, num_examples: int) -> float:
    """Return the client's delta: ``dp.delta`` checked against ``1 / N``, or the default."""
    if dp.delta is None:
        return default_delta(num_examples)
    return check_delta(dp.delta, num_examples)
