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
guarantee holds whatever the server does with them. Client-level DP (a client's
whole dataset) is the other level, :mod:`fl_app.privacy.levels`. Not covered:
Byzantine clients, which do not run DP-SGD, and any number computed on the private
data without noise: the mean training loss :func:`train_private` returns, or a local
evaluation, leaves the guarantee once it is sent to the server.

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

The package, one concept a module: :mod:`~fl_app.privacy.settings` (the keys, their
checks, :class:`DPSettings`), :mod:`~fl_app.privacy.sampling` (Poisson batches),
:mod:`~fl_app.privacy.accounting` (accountants across rounds, calibration),
:mod:`~fl_app.privacy.models` (Opacus-compatible models),
:mod:`~fl_app.privacy.engines` (per-sample gradients, one file per engine),
:mod:`~fl_app.privacy.training` (the DP-SGD loop), :mod:`~fl_app.privacy.randomness`
(where masks and noise come from) and :mod:`~fl_app.privacy.client_round` (one client
round: accountant, budget, training).

The masks and the noise come from the caller's ``torch.Generator``;
:mod:`fl_app.privacy.randomness` decides which (seeded in a simulation, OS entropy on
a real device, torchcsprng's CSPRNG in secure mode). ``DPSettings.secure_mode``
draws each noise vector as Opacus' ``secure_mode`` does (the sum of four
Gaussians, halved: robust to floating-point attacks on the noise, Mironov 2012).
"""

from fl_app.privacy.accounting import (
    AccountantStateError,
    dump_accountant,
    epsilon_after_round,
    epsilon_of,
    load_accountant,
    new_accountant,
    noise_for_target_epsilon,
    resolve_noise_multiplier,
)
from fl_app.privacy.engines import (
    DEFAULT_GRAD_SAMPLE_MODE,
    GRAD_SAMPLE_MODES,
    register_grad_sample_mode,
)
from fl_app.privacy.models import IncompatibleModelError, make_private_compatible
from fl_app.privacy.sampling import planned_steps, poisson_batches, sample_rate, steps_per_epoch
from fl_app.privacy.settings import (
    DPSettings,
    accountant_names,
    check_delta,
    default_delta,
    resolve_delta,
)
from fl_app.privacy.training import train_private

__all__ = [
    "DEFAULT_GRAD_SAMPLE_MODE", "GRAD_SAMPLE_MODES", "AccountantStateError", "DPSettings",
    "IncompatibleModelError", "accountant_names", "check_delta", "default_delta",
    "dump_accountant", "epsilon_after_round", "epsilon_of", "load_accountant",
    "make_private_compatible", "new_accountant", "noise_for_target_epsilon", "planned_steps",
    "poisson_batches", "register_grad_sample_mode", "resolve_delta",
    "resolve_noise_multiplier", "sample_rate", "steps_per_epoch", "train_private",
]
