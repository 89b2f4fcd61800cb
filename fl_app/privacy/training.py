"""The DP-SGD training loop of one client round."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from fl_app.learning.device import model_device
from fl_app.privacy.accounting import AccountantStateError
from fl_app.privacy.engines import GRAD_SAMPLE_MODES, StepContext
from fl_app.privacy.models import check_model
from fl_app.privacy.randomness import noise_generator_on
from fl_app.privacy.sampling import poisson_batches, sample_rate, steps_per_epoch
from fl_app.privacy.settings import KEY_ACCOUNTANT, DPSettings
from fl_app.task import TrainSettings

if TYPE_CHECKING:
    from opacus.accountants import IAccountant


def train_private(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings,
                  dp: DPSettings, accountant: IAccountant,
                  generator: torch.Generator) -> tuple[float, int]:
    """Train ``model`` in place with DP-SGD; return ``(mean loss, optimizer steps)``.

    ``settings.local_epochs`` epochs of ``ceil(N / B)`` Poisson-sampled steps
    each (module docstring), with ``dp.noise_multiplier`` as given (resolve a
    target epsilon first with :func:`resolve_noise_multiplier`). ``accountant``
    is stepped once per optimizer step, empty batches included. ``generator``
    drives the sampling and the noise (on a GPU the noise through a generator it
    keys: :func:`~fl_app.privacy.randomness.noise_generator_on`). The mean loss is over
    non-empty batches (NaN if all were empty); it is not private (module docstring). ``model`` must
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
    check_model(model)
    rate = sample_rate(num_examples, settings.batch_size)
    steps = steps_per_epoch(num_examples, settings.batch_size)
    ctx = StepContext(
        model=model, x=x, y=y,
        optimizer=torch.optim.SGD(model.parameters(), lr=settings.learning_rate,
                                  momentum=settings.momentum),
        noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm,
        expected_batch_size=min(settings.batch_size, num_examples), generator=generator,
        secure_mode=dp.secure_mode,
        noise_generator=noise_generator_on(model_device(model), generator, dp.secure_mode))
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
