"""Differential privacy for honest clients: DP-SGD through Opacus, accounted across rounds.

Privacy model
-------------
Record-level differential privacy, per client. Two datasets are neighbours when
they differ in one example of *one client's* local dataset of ``N`` examples.
Each honest client trains with DP-SGD (Abadi et al., 2016, "Deep Learning with
Differential Privacy") and reports its own ``(epsilon, delta)``: the guarantee
its records have against anyone who sees every update it sends and cannot
predict its masks and noise: on a real device the server too, in a seeded
simulation anyone who does not know the run's seed (:mod:`fl_app.dp_randomness`).
It is **cumulative over every round the client has trained in**: the
Opacus accountant's history (a list of ``(noise_multiplier, sample_rate,
num_steps)`` compositions) is kept in the client's state between rounds
(:func:`dump_accountant` / :func:`load_accountant`) and each round adds its steps.
Aggregation (FedAvg, Krum, ...) only post-processes the noisy updates, so the
guarantee holds whatever the server does with them. Not covered: user-level DP
(a client's whole dataset), Byzantine clients, which do not run DP-SGD, and any
number computed on the private data without noise: the mean training loss
:func:`train_private` returns, or a local evaluation, leaves the guarantee once
it is sent to the server.

One DP-SGD step (Opacus' flat clipping, ``DPOptimizer``), with ``C`` the
``dp-max-grad-norm``, ``sigma`` the ``dp-noise-multiplier`` and ``B`` the
``batch-size``:

* Poisson sampling: every example joins the batch independently with probability
  ``q = B / N`` (expected batch size ``B``); an epoch is ``ceil(1 / q) =
  ceil(N / B)`` steps, as Opacus' ``DPDataLoader`` runs. (Opacus' ``make_private``
  uses ``q = 1 / ceil(N / B)`` instead; the two agree whenever ``B`` divides ``N``.)
  A batch may be empty; the step still adds noise and is still accounted, as
  Opacus' ``DPOptimizer`` does with an empty batch.
* clipping: ``g_i = grad loss(x_i, y_i)``, ``g_i <- g_i * min(1, C / (||g_i||_2 + 1e-6))``
  (the ``1e-6`` is Opacus').
* noise: ``g = (sum_i g_i + N(0, sigma^2 C^2 I)) / B``, then SGD with momentum.
* accounting: each step is one Poisson-subsampled Gaussian mechanism
  ``(sigma, q)``; the accountant composes them: ``"rdp"`` (Renyi DP, Mironov et al.
  2019, "Renyi Differential Privacy of the Sampled Gaussian Mechanism") or
  ``"prv"`` (privacy random variables, Gopi et al. 2021, "Numerical Composition
  of Differential Privacy", tighter).

``delta`` must be below ``1 / N``: a mechanism that publishes each record with
probability ``delta`` is ``(0, delta)``-DP, so ``delta >= 1 / N`` allows leaking
about one whole record. :func:`default_delta` takes ``1 / (10 N)``: the
expected number of records such a leak could expose is then at most 0.1, and
epsilon depends on delta only through ``log(1 / delta)``, so the factor 10 costs
little.

Per-sample gradients: ``grad_sample_mode``
------------------------------------------
``"hooks"``, ``"functorch"``, ``"ew"`` (expanded weights) and ``"ghost"`` (ghost
clipping) run Opacus' ``GradSampleModule`` variants with its ``DPOptimizer``.
``"bookkeeping"``, the default, is a leaner loop on Opacus' building blocks
(after Bu et al. 2023, "Differentially Private Optimization on Large Model at
Small Cost"): one forward pass recording each layer's input and output, one
``torch.autograd.grad`` to the layer *outputs* only (the parameter gradients
autograd would compute, and throw away under DP, are skipped), per-sample
gradients from Opacus' registered grad samplers (ghost norms for linear layers:
``||b_i a_i^T|| = ||b_i|| ||a_i||``), then the clipped sum, one Gaussian draw for
all parameters and the momentum step. Same sampling, clipping, noise and
accounting as the Opacus modes; the tests check it against them.

Seconds per local epoch at the seed's setting (cifar-cnn, 500 CIFAR-10 train
images, batch 10, lr 0.01, momentum 0.5; ``benchmarks/bench_dp.py``, medians of
7 repeats; 2-core CPU shared with other jobs, load average ~8, hence the slow
2-thread wall times: OpenMP threads wait for busy cores. The ratios pair each
repeat with its own non-private epoch)::

    threads  mode         wall s/epoch x non-priv  CPU s/epoch x non-priv
          1  non-private         0.414      1.00x        0.199      1.00x
          1  bookkeeping         0.597      1.43x        0.263      1.42x
          1  ew                  0.984      2.39x        0.429      2.28x
          1  functorch           2.034      4.49x        0.890      4.38x
          1  ghost               1.309      3.17x        0.590      2.90x
          1  hooks               1.082      2.60x        0.506      2.41x
          2  non-private         5.737      1.00x        2.851      1.00x
          2  bookkeeping         8.081      1.23x        3.404      1.28x
          2  ew                 12.178      2.20x        6.646      2.22x
          2  functorch          20.545      3.77x       12.743      3.76x
          2  ghost              18.865      2.28x        8.297      2.28x
          2  hooks               8.020      1.92x        4.515      1.70x

``"bookkeeping"`` is the default: 1.4x the non-private epoch with one thread
(the app's setting) and 1.2-1.3x with two, where the fastest Opacus modes take
2.3-2.4x (ew, one thread) and 1.7-1.9x (hooks, two threads); the issue measured
2.9x hooks, 3.9x functorch, 2.1x ew and 2.9x ghost.
Its time goes to the per-sample conv gradients (im2col + batched matmul) and
the Gaussian draw, and it saves the parameter-gradient part of the conv backward.

The masks and the noise come from the caller's ``torch.Generator``;
:mod:`fl_app.dp_randomness` decides which (seeded in a simulation, OS entropy on
a real device, torchcsprng's CSPRNG in secure mode). ``DPSettings.secure_mode``
draws each noise vector as Opacus' ``secure_mode`` does (the sum of four
Gaussians, halved: robust to floating-point attacks on the noise, Mironov 2012).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F  # noqa: N812 (torch convention)
from opacus.accountants import IAccountant, create_accountant
from opacus.accountants import registry as accountant_registry
from opacus.accountants.utils import get_noise_multiplier
from opacus.grad_sample import GradSampleModule, prepare_module
from opacus.grad_sample.functorch import ft_compute_per_sample_gradient
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping, get_optimizer_class
from opacus.optimizers.optimizer import _generate_noise
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from opacus.utils.tensor_utils import unfold2d
from opacus.validators import ModuleValidator
from opacus.validators.errors import UnsupportedModuleError
from torch import nn

from fl_app.errors import ConfigError, ConfigErrors, FLAppError
from fl_app.task import TrainSettings

KEY_NOISE_MULTIPLIER = "dp-noise-multiplier"
KEY_MAX_GRAD_NORM = "dp-max-grad-norm"
KEY_DELTA = "dp-delta"
KEY_ACCOUNTANT = "dp-accountant"
KEY_TARGET_EPSILON = "dp-target-epsilon"
KEY_MAX_EPSILON = "dp-max-epsilon"
KEY_GRAD_SAMPLE_MODE = "dp-grad-sample-mode"

#: Opacus accountants refused here: ``"gdp"`` is a central-limit approximation that
#: Opacus itself says "can underestimate privacy expenditure".
UNSOUND_ACCOUNTANTS = frozenset({"gdp"})

#: A target epsilon whose calibrated noise multiplier exceeds this is refused: the
#: noise on each coordinate would then be 100 times the largest clipped
#: per-example gradient norm ``C``, and the update would carry no signal.
MAX_NOISE_MULTIPLIER = 100.0

#: Opacus' binary search stops within this of the target epsilon (from below).
EPSILON_TOLERANCE = 0.01

DEFAULT_GRAD_SAMPLE_MODE = "bookkeeping"


class IncompatibleModelError(FLAppError, ValueError):
    """A model Opacus cannot train with per-example gradients (e.g. BatchNorm left in)."""


class AccountantStateError(FLAppError, ValueError):
    """A stored accountant state that cannot be read back or belongs to another accountant."""


# --------------------------------------------------------------------------- validation


def accountant_names() -> list[str]:
    """Return the accountants allowed for ``dp-accountant``: Opacus' registry minus unsound ones.

    Read from Opacus' registry, so an accountant registered through
    ``opacus.accountants.register_accountant`` is accepted too.
    """
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


def _check_delta_range(delta: float) -> float:
    delta = _check_positive(KEY_DELTA, delta, "a probability below 1 / N")
    if delta >= 1:
        raise ConfigError(KEY_DELTA, delta, "a probability in (0, 1), below 1 / N")
    return delta


def check_delta(delta: float, num_examples: int) -> float:
    """Return ``delta`` if ``0 < delta < 1 / num_examples`` (see the module docstring)."""
    delta = _check_delta_range(delta)
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
    accountant: str = "rdp"
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
    optional = [(_check_delta_range, dp.delta), (check_target_epsilon, dp.target_epsilon),
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


# ------------------------------------------------------------------------ sampling


def sample_rate(num_examples: int, batch_size: int) -> float:
    """Return Poisson sampling's ``q = min(1, B / N)`` (expected batch size ``B``)."""
    if num_examples < 1 or batch_size < 1:
        raise ValueError(f"need num_examples >= 1 and batch_size >= 1; "
                         f"got {num_examples} and {batch_size}")
    return min(1.0, batch_size / num_examples)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Return ``ceil(1 / q) = ceil(N / B)``, the steps of one epoch as Opacus' DPDataLoader."""
    sample_rate(num_examples, batch_size)
    return -(-num_examples // batch_size)


def planned_steps(num_examples: int, settings: TrainSettings, rounds: int) -> int:
    """Return the DP-SGD steps of ``rounds`` rounds: rounds x local epochs x steps per epoch."""
    return rounds * settings.local_epochs * steps_per_epoch(num_examples, settings.batch_size)


def poisson_batches(num_examples: int, rate: float, steps: int,
                    generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Yield ``steps`` index tensors, each example kept with probability ``rate``.

    The draw is Opacus' ``UniformWithReplacementSampler``'s: ``rand(N) < q``.
    """
    for _ in range(steps):
        yield (torch.rand(num_examples, generator=generator) < rate).nonzero().view(-1)


# ---------------------------------------------------------------------- accounting


def new_accountant(kind: str) -> IAccountant:
    """Return a fresh Opacus accountant of ``kind`` (checked against :func:`accountant_names`)."""
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
    trial = create_accountant(accountant.mechanism())
    trial.load_state_dict({"history": list(accountant.history),
                           "mechanism": accountant.mechanism()})
    sigma = dp.noise_multiplier if noise_multiplier is None else noise_multiplier
    rate = sample_rate(num_examples, settings.batch_size)
    for _ in range(planned_steps(num_examples, settings, 1)):
        trial.step(noise_multiplier=sigma, sample_rate=rate)
    return epsilon_of(trial, resolve_delta(dp, num_examples))


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
    _check_delta_range(delta)
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


# --------------------------------------------------------------------------- models


def make_private_compatible(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` Opacus can train: ``ModuleValidator.fix`` then validate.

    ``fix`` replaces BatchNorm by GroupNorm (and LSTM/GRU/attention by Opacus'
    DP layers), which changes the ``state_dict``: build every copy of the model
    (server and clients) through this function. Raises
    :class:`IncompatibleModelError` if the fixed model still fails validation.
    """
    fixed = ModuleValidator.fix(model)
    fixed.train()
    try:
        ModuleValidator.validate(fixed, strict=True)
    except UnsupportedModuleError as error:
        raise IncompatibleModelError(
            f"the model cannot be trained with DP-SGD even after Opacus' fixes: {error}. "
            "Replace the listed layers (per-example gradients must not mix examples) or "
            "train without DP.") from None
    return fixed


def _check_model(model: nn.Module) -> None:
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise IncompatibleModelError(
            f"the model is not ready for DP-SGD: {errors}. Build it with "
            "make_private_compatible(model) (BatchNorm -> GroupNorm).")


# ----------------------------------------------------------------- per-sample modes

StepFn = Callable[[torch.Tensor], "float | None"]
"""One DP-SGD step on the batch of the given indices; returns its mean loss (None if empty)."""


@dataclass
class _StepContext:
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    optimizer: torch.optim.Optimizer
    noise_multiplier: float
    max_grad_norm: float
    expected_batch_size: int
    generator: torch.Generator
    secure_mode: bool = False


Session = Callable[[_StepContext], AbstractContextManager[StepFn]]
"""Sets a model up for one call of :func:`train_private` and yields its step function."""

GRAD_SAMPLE_MODES: dict[str, Session] = {}


def register_grad_sample_mode(name: str, session: Session) -> None:
    """Register a per-sample-gradient mode: a context manager yielding a step function."""
    if name in GRAD_SAMPLE_MODES:
        raise ValueError(f"grad_sample_mode {name!r} is already registered")
    GRAD_SAMPLE_MODES[name] = session


@dataclass
class _Record:
    """One call of a hooked layer: its inputs (detached) and its output."""

    activations: list
    output: torch.Tensor
    version: int  # output._version when recorded: a later in-place change shows


class _Tape:
    """Forward hooks recording every call of each trainable layer (bookkeeping mode)."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = list(_trainable_layers(model))
        covered = {id(p) for layer in self.layers for p in _layer_params(layer)}
        missing = [name for name, p in model.named_parameters()
                   if p.requires_grad and id(p) not in covered]
        if missing or not covered:
            raise IncompatibleModelError(
                f"parameters {missing} belong to no layer the bookkeeping mode can hook (or "
                f"there is nothing to train); try {KEY_GRAD_SAMPLE_MODE}='hooks'")
        self.calls: dict[nn.Module, list[_Record]] = {}
        self.handles = [layer.register_forward_hook(self._record) for layer in self.layers]

    def _record(self, module: nn.Module, inputs: tuple, output: object) -> None:
        if not torch.is_grad_enabled():
            return
        if not isinstance(output, torch.Tensor):
            raise IncompatibleModelError(
                f"{type(module).__name__} returns {type(output).__name__}, not a tensor; use "
                f"{KEY_GRAD_SAMPLE_MODE}='hooks'")
        activations = [t.detach() if isinstance(t, torch.Tensor) else t for t in inputs]
        self.calls.setdefault(module, []).append(_Record(activations, output, output._version))

    def backprops(self, loss: torch.Tensor) -> list[tuple[nn.Module, list[tuple[_Record,
                                                                                torch.Tensor]]]]:
        """Return each called layer's records with ``d loss / d output`` of each call.

        Only the gradients flowing to the layer outputs are computed, not those
        of the parameters, which DP-SGD would discard.
        """
        records = [(layer, record) for layer in self.layers for record in self.calls.get(layer, [])]
        for layer, record in records:
            if record.output._version != record.version:
                raise IncompatibleModelError(
                    f"the output of {type(layer).__name__} is modified in place (e.g. by "
                    "ReLU(inplace=True)); use out-of-place operations")
        grads = torch.autograd.grad(loss, [r.output for _, r in records], allow_unused=True)
        by_layer: dict[nn.Module, list[tuple[_Record, torch.Tensor]]] = {}
        for (layer, record), grad in zip(records, grads, strict=True):
            if grad is not None:  # None: this output does not reach the loss
                by_layer.setdefault(layer, []).append((record, grad))
        self.calls.clear()
        return list(by_layer.items())

    def remove(self) -> None:
        """Remove the hooks and what the functorch fallback attached to layers."""
        for handle in self.handles:
            handle.remove()
        self.calls.clear()
        for layer in self.layers:
            if "ft_compute_sample_grad" in vars(layer):
                del layer.ft_compute_sample_grad


def _layer_params(layer: nn.Module) -> list[nn.Parameter]:
    # A layer Opacus has a grad sampler for owns its direct parameters; any other
    # layer is handled whole by functorch, children included (as GradSampleModule).
    recurse = type(layer) not in GradSampleModule.GRAD_SAMPLERS
    return [p for p in layer.parameters(recurse=recurse) if p.requires_grad]


def _trainable_layers(module: nn.Module) -> Iterator[nn.Module]:
    """Yield the layers to hook, as ``GradSampleModule.iterate_submodules`` does."""
    if any(p.requires_grad for p in module.parameters(recurse=False)):
        yield module
        if type(module) not in GradSampleModule.GRAD_SAMPLERS:
            return
    for child in module.children():
        yield from _trainable_layers(child)


def _conv2d_grad_sample(layer: nn.Conv2d, activations: list[torch.Tensor],
                        backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Opacus' Conv2d grad sampler without its grouped-einsum reshuffles (groups == 1).

    ``grad W_i = B_i U_i^T`` with ``U_i`` the unfolded (im2col) input of example ``i``
    and ``B_i`` its output gradient; 30-40 % faster than Opacus' at batch 10.
    """
    n = backprops.shape[0]
    unfolded = unfold2d(activations[0], kernel_size=layer.kernel_size, padding=layer.padding,
                        stride=layer.stride, dilation=layer.dilation)
    backprops = backprops.reshape(n, layer.out_channels, -1)
    grads = {}
    if layer.weight.requires_grad:
        grads[layer.weight] = torch.bmm(backprops, unfolded.transpose(1, 2))
    if layer.bias is not None and layer.bias.requires_grad:
        grads[layer.bias] = backprops.sum(2)
    return grads


def _grad_sampler(layer: nn.Module) -> Callable:
    if (type(layer) is nn.Conv2d and layer.groups == 1 and layer.padding_mode == "zeros"
            and not isinstance(layer.padding, str)):
        return _conv2d_grad_sample
    return GradSampleModule.GRAD_SAMPLERS.get(type(layer), ft_compute_per_sample_gradient)


def _clip_and_add(calls: list[tuple[nn.Module, list[tuple[_Record, torch.Tensor]]]],
                  grads: dict[nn.Parameter, torch.Tensor], n: int, max_grad_norm: float) -> None:
    """Add ``sum_i min(1, C / (||g_i|| + 1e-6)) g_i`` to the gradient buffers ``grads``.

    ``||g_i||^2`` sums over layers: for a linear layer called once on ``(n, in)``
    inputs, ``||b_i||^2 (||a_i||^2 + 1)`` without forming ``b_i a_i^T`` (ghost
    norm); for any other layer, from its per-sample gradients (summed over calls).
    """
    squared = torch.zeros(n, dtype=next(iter(grads.values())).dtype)
    clipped_sums: list[Callable[[torch.Tensor], None]] = []
    for layer, records in calls:
        inputs = records[0][0].activations[0]
        if type(layer) is nn.Linear and len(records) == 1 and inputs.dim() == 2:
            b = records[0][1]
            b_squared = b.square().sum(1)
            if layer.weight.requires_grad:
                squared.addcmul_(inputs.square().sum(1), b_squared)
                clipped_sums.append(lambda c, w=grads[layer.weight], a=inputs, b=b:
                                    w.addmm_((b * c[:, None]).t(), a))
            if layer.bias is not None and layer.bias.requires_grad:
                squared.add_(b_squared)
                clipped_sums.append(lambda c, v=grads[layer.bias], b=b: v.addmv_(b.t(), c))
            continue
        sampler, per_sample = _grad_sampler(layer), {}
        for record, backprop in records:
            for param, grad in sampler(layer, record.activations, backprop).items():
                if param.requires_grad:
                    per_sample[param] = per_sample[param] + grad if param in per_sample else grad
        for param, grad in per_sample.items():
            if grad.shape[0] != n:
                raise IncompatibleModelError(
                    f"{type(layer).__name__} gave {grad.shape[0]} per-sample gradients for a "
                    f"batch of {n}; use {KEY_GRAD_SAMPLE_MODE}='hooks'")
            matrix = grad.reshape(n, -1)
            squared.add_(matrix.square().sum(1))
            clipped_sums.append(lambda c, v=grads[param], g=matrix: v.view(-1).addmv_(g.t(), c))
    clip = (max_grad_norm / (squared.sqrt_() + 1e-6)).clamp_(max=1.0)  # Opacus' factor
    for add in clipped_sums:
        add(clip)


@contextmanager
def _bookkeeping_session(ctx: _StepContext) -> Iterator[StepFn]:
    model, generator = ctx.model, ctx.generator
    tape = _Tape(model)
    params = [p for p in model.parameters() if p.requires_grad]
    # All gradients live in one buffer: one Gaussian draw and one division per step.
    flat = torch.empty(sum(p.numel() for p in params), dtype=params[0].dtype,
                       device=params[0].device)
    grads, offset = {}, 0
    for p in params:
        grads[p] = flat[offset:offset + p.numel()].view(p.shape)
        offset += p.numel()
    noise_std = ctx.noise_multiplier * ctx.max_grad_norm

    def step(idx: torch.Tensor) -> float | None:
        with torch.no_grad():
            if ctx.secure_mode:  # Opacus' own draw: four Gaussians summed, halved
                flat.copy_(_generate_noise(noise_std, flat, generator, secure_mode=True))
            else:
                flat.normal_(0.0, noise_std, generator=generator)
        n, loss_value = idx.numel(), None
        if n:  # an empty batch adds nothing but the noise
            loss = F.cross_entropy(model(ctx.x[idx]), ctx.y[idx], reduction="sum")
            calls = tape.backprops(loss)
            loss_value = loss.item() / n
            with torch.no_grad():
                _clip_and_add(calls, grads, n, ctx.max_grad_norm)
        with torch.no_grad():
            flat.div_(ctx.expected_batch_size)
        ctx.optimizer.step()
        return loss_value

    for p in params:
        p.grad = grads[p]
    try:
        yield step
    finally:
        tape.remove()
        for p in params:
            p.grad = None


def _opacus_session(mode: str) -> Session:
    """Return a session running Opacus' ``GradSampleModule`` of ``mode`` and its DPOptimizer."""

    @contextmanager
    def session(ctx: _StepContext) -> Iterator[StepFn]:
        extra = {"max_grad_norm": ctx.max_grad_norm} if mode == "ghost" else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = prepare_module(ctx.model, grad_sample_mode=mode, batch_first=True,
                                    loss_reduction="mean", **extra)
        try:
            module.forbid_grad_accumulation()  # as make_private does with Poisson sampling
            optimizer = get_optimizer_class(clipping="flat", distributed=False,
                                            grad_sample_mode=mode)(
                ctx.optimizer, noise_multiplier=ctx.noise_multiplier,
                max_grad_norm=ctx.max_grad_norm, expected_batch_size=ctx.expected_batch_size,
                loss_reduction="mean", generator=ctx.generator, secure_mode=ctx.secure_mode)
            criterion: Callable = nn.CrossEntropyLoss()
            if mode == "ghost":
                criterion = DPLossFastGradientClipping(module, optimizer, criterion, "mean")

            def step(idx: torch.Tensor) -> float | None:
                optimizer.zero_grad(set_to_none=True)
                if idx.numel() == 0:
                    _empty_batch(optimizer)
                    optimizer.step()
                    return None
                loss = criterion(module(ctx.x[idx]), ctx.y[idx])
                loss.backward()
                optimizer.step()
                return loss.item()

            yield step
        finally:
            module.cleanup()
            _strip_opacus_attributes(ctx.model)

    return session


def _empty_batch(optimizer: DPOptimizer) -> None:
    """Give ``optimizer`` the zero per-sample gradients of an empty Poisson batch.

    Opacus' ``DPOptimizer`` turns them into a noise-only step; the ``"functorch"``
    and ``"ew"`` modules fail on an empty forward pass, so none is run.
    """
    for p in optimizer.params:
        if isinstance(optimizer, DPOptimizerFastGradientClipping):
            p.grad = torch.zeros_like(p)
        else:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)


def _strip_opacus_attributes(model: nn.Module) -> None:
    # GradSampleModule.cleanup() leaves these behind; the model must come out plain.
    for p in model.parameters():
        for name in ("summed_grad", "grad_sample", "_forward_counter", "_norm_sample"):
            if hasattr(p, name):
                delattr(p, name)
        p.grad = None
    for module in model.modules():
        for name in ("activations", "max_batch_len", "ft_compute_sample_grad"):
            if name in vars(module):
                delattr(module, name)


register_grad_sample_mode("bookkeeping", _bookkeeping_session)
for _mode in ("hooks", "functorch", "ew", "ghost"):
    register_grad_sample_mode(_mode, _opacus_session(_mode))


# ------------------------------------------------------------------------- training


def train_private(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings,
                  dp: DPSettings, accountant: IAccountant,
                  generator: torch.Generator) -> tuple[float, int]:
    """Train ``model`` in place with DP-SGD; return ``(mean loss, optimizer steps)``.

    ``settings.local_epochs`` epochs of ``ceil(N / B)`` Poisson-sampled steps
    each (module docstring), with ``dp.noise_multiplier`` as given (resolve a
    target epsilon first with :func:`resolve_noise_multiplier`). ``accountant``
    is stepped once per optimizer step, empty batches included. ``generator``
    drives the sampling and the noise. The mean loss is over non-empty batches
    (NaN if all were empty); it is not private (module docstring). ``model`` must
    pass Opacus' ``ModuleValidator`` (:func:`make_private_compatible`); it comes
    out a plain module, no hooks left.
    """
    num_examples = len(y)
    if num_examples < 1:
        raise ValueError("train_private needs at least one example")
    if accountant.mechanism() != dp.accountant:
        raise AccountantStateError(f"got a {accountant.mechanism()!r} accountant but "
                                   f"{KEY_ACCOUNTANT} is {dp.accountant!r}")
    model.train()
    _check_model(model)
    rate = sample_rate(num_examples, settings.batch_size)
    steps = steps_per_epoch(num_examples, settings.batch_size)
    ctx = _StepContext(
        model=model, x=x, y=y,
        optimizer=torch.optim.SGD(model.parameters(), lr=settings.learning_rate,
                                  momentum=settings.momentum),
        noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm,
        expected_batch_size=min(settings.batch_size, num_examples), generator=generator,
        secure_mode=dp.secure_mode)
    total, batches, taken = 0.0, 0, 0
    with GRAD_SAMPLE_MODES[dp.grad_sample_mode](ctx) as step:
        for _ in range(settings.local_epochs):
            for idx in poisson_batches(num_examples, rate, steps, generator):
                loss = step(idx)
                accountant.step(noise_multiplier=dp.noise_multiplier, sample_rate=rate)
                taken += 1
                if loss is not None:
                    total += loss
                    batches += 1
    return (total / batches if batches else math.nan), taken
