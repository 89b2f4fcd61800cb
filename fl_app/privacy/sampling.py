"""Poisson sampling as Opacus' ``DPDataLoader`` does it: rate, steps, batches."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from fl_app.task import TrainSettings


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
