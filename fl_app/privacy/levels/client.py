"""Client-level local DP (``dp-level = 'client'``): each client noises its whole update.

McMahan, Ramage, Talwar and Zhang, "Learning Differentially Private Recurrent Language
Models" (ICLR 2018) define client-level DP; here each honest client applies the
Gaussian mechanism itself, so the server never sees a clean update:

    u = w_local - w_global,   u <- u * min(1, S / ||u||),   send w_global + u + N(0, sigma^2 S^2 I)

with ``S`` the ``dp-clipping-norm`` and ``sigma`` the ``dp-noise-multiplier``. Two
neighbouring federations differ in one client's *whole* dataset; the update has L2
sensitivity ``S`` (add or remove the client's data: its clipped update appears or
not), so each round is one Gaussian mechanism with noise multiplier ``sigma`` and
sampling rate 1 (the client's data is all used). The client's Opacus accountant
composes one ``(sigma, q = 1)`` step per round it trained in; delta defaults to
``1 / (10 K)`` for ``K`` clients (``dp-delta`` if set, below ``1 / K``). A
``dp-target-epsilon`` calibrates sigma for ``num-server-rounds`` such rounds (as if
the client took part in every one), and ``dp-max-epsilon`` stops a client as at
record level. The noise comes from the secret source of :mod:`fl_app.privacy.randomness`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fl_app.errors import ConfigError
from fl_app.privacy.accounting import (
    dump_accountant,
    epsilon_after_steps,
    epsilon_of,
    load_accountant,
    noise_for_target_epsilon,
)
from fl_app.privacy.client_round import RoundOutcome
from fl_app.privacy.levels import DPLevel, register_dp_level
from fl_app.privacy.settings import KEY_DELTA, KEY_MAX_EPSILON, DPSettings, default_delta
from fl_app.task import TrainSettings, train

CLIENT_SAMPLE_RATE = 1.0  # the mechanism sees the client's whole dataset every round


def clip_and_noise(update: torch.Tensor, clipping_norm: float, noise_multiplier: float,
                   generator: torch.Generator) -> torch.Tensor:
    """``update * min(1, S / ||update||) + N(0, sigma^2 S^2)``, in float64 then back."""
    flat = update.to(torch.float64)
    norm = float(torch.linalg.vector_norm(flat))
    clipped = flat * min(1.0, clipping_norm / norm) if norm > 0 else flat
    # drawn on the generator's (CPU) stream, then moved: the same noise on every device
    noise = torch.normal(0.0, noise_multiplier * clipping_norm, size=flat.shape,
                         generator=generator, dtype=torch.float64)
    return (clipped + noise.to(flat.device)).to(update.dtype)


def client_delta(dp: DPSettings, num_clients: int) -> float:
    """``dp-delta`` checked against ``1 / K`` clients, or ``1 / (10 K)``."""
    if dp.delta is None:
        return default_delta(num_clients)
    if dp.delta >= 1.0 / num_clients:
        raise ConfigError(KEY_DELTA, dp.delta, f"a value below 1 / K = {1.0 / num_clients:.3g} "
                          f"for K = {num_clients} clients (dp-level='client')",
                          "Leave dp-delta unset to use 1 / (10 K).")
    return dp.delta


def client_noise_multiplier(dp: DPSettings, num_clients: int, planned_rounds: int) -> float:
    """sigma: ``dp-noise-multiplier``, or calibrated to ``dp-target-epsilon`` over the rounds."""
    if dp.target_epsilon is None:
        return dp.noise_multiplier
    return noise_for_target_epsilon(dp.target_epsilon, client_delta(dp, num_clients),
                                    CLIENT_SAMPLE_RATE, planned_rounds, dp.accountant)


def client_level_round(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       settings: TrainSettings, dp: DPSettings, clipping_norm: float,
                       planned_rounds: int, accountant_state: str | None,
                       generator: torch.Generator, num_clients: int) -> RoundOutcome:
    """Train ``model`` (holding the global weights) in place, then clip and noise its update."""
    accountant = load_accountant(accountant_state, dp.accountant)
    sigma = client_noise_multiplier(dp, num_clients, planned_rounds)
    delta = client_delta(dp, num_clients)
    if dp.max_epsilon is not None:
        after = epsilon_after_steps(accountant, sigma, CLIENT_SAMPLE_RATE, 1, delta)
        if after > dp.max_epsilon:
            return RoundOutcome(False, math.nan, epsilon_of(accountant, delta),
                                dump_accountant(accountant),
                                f"DP budget: training would reach epsilon {after:.3f} > "
                                f"{KEY_MAX_EPSILON} {dp.max_epsilon}")
    start = nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    seed = int(torch.randint(2**62, (), generator=generator))  # shuffling: not secret
    loss = train(model, x, y, settings, torch.Generator().manual_seed(seed))
    update = nn.utils.parameters_to_vector(model.parameters()).detach() - start
    noisy = clip_and_noise(update, clipping_norm, sigma, generator)
    nn.utils.vector_to_parameters(start + noisy, model.parameters())
    accountant.step(noise_multiplier=sigma, sample_rate=CLIENT_SAMPLE_RATE)
    return RoundOutcome(True, loss, epsilon_of(accountant, delta), dump_accountant(accountant))


def client_calibration_errors(dp: DPSettings, settings: TrainSettings, planned_rounds: int,
                              num_clients: int, sampled: int, sizes: object) -> list[ConfigError]:
    """Delta against the K clients, sigma for the planned rounds (the sizes do not matter)."""
    try:
        client_delta(dp, num_clients)
        client_noise_multiplier(dp, num_clients, planned_rounds)
    except ConfigError as exc:
        return [exc]
    return []


register_dp_level(DPLevel(
    "client", client_level_round, unit="one client's whole dataset",
    protected_from="anyone who sees the client's updates, the server included (the noise "
                   "is drawn on the client)",
    not_protected_from="no one, as long as the client's noise stays secret", robust_rules=True,
    # the unit is the client: delta against the K clients
    delta_of=lambda dp, num_clients, num_examples: client_delta(dp, num_clients),
    calibration_errors=client_calibration_errors))
