"""Per-sample-gradient engines (``dp-grad-sample-mode``), one file each, registered by name.

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

An engine is a :data:`Session`: a context manager that sets a model up for one
call of :func:`fl_app.privacy.training.train_private` and yields its step
function. A new engine is one file here that calls :func:`register_grad_sample_mode`,
plus its import at the bottom of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

KEY_GRAD_SAMPLE_MODE = "dp-grad-sample-mode"
DEFAULT_GRAD_SAMPLE_MODE = "bookkeeping"

StepFn = Callable[[torch.Tensor], "float | None"]
"""One DP-SGD step on the batch of the given indices; returns its mean loss (None if empty)."""


@dataclass
class StepContext:
    """What a step needs: the model, the data, the optimizer and the DP parameters."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    optimizer: torch.optim.Optimizer
    noise_multiplier: float
    max_grad_norm: float
    expected_batch_size: int
    generator: torch.Generator  # the Poisson masks (and, on the CPU, the noise)
    secure_mode: bool = False
    # the Gaussian noise, on the parameters' device (fl_app.privacy.randomness.noise_generator_on)
    noise_generator: torch.Generator | None = None

    @property
    def noise(self) -> torch.Generator:
        """The generator of the noise: :attr:`noise_generator`, else :attr:`generator`."""
        return self.generator if self.noise_generator is None else self.noise_generator


Session = Callable[[StepContext], AbstractContextManager[StepFn]]
"""Sets a model up for one call of :func:`train_private` and yields its step function."""

GRAD_SAMPLE_MODES: dict[str, Session] = {}


def register_grad_sample_mode(name: str, session: Session) -> None:
    """Register a per-sample-gradient mode: a context manager yielding a step function."""
    if name in GRAD_SAMPLE_MODES:
        raise ValueError(f"grad_sample_mode {name!r} is already registered")
    GRAD_SAMPLE_MODES[name] = session



# Each engine registers itself on import (after the registry above exists).
from fl_app.privacy.engines import bookkeeping, opacus_modes  # noqa: E402, F401
