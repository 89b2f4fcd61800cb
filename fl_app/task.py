"""Local training and evaluation on tensors: the task, with no Flower import.

A client's data is held as two tensors (images ``x``: float32 ``N x C x H x W``,
already normalised; labels ``y``: int64 ``N``), decoded once per process by
:mod:`fl_app.learning.data`. Batches are drawn by indexing those tensors with a seeded
permutation instead of a ``DataLoader``: with the seed's batch size of 10 a
``DataLoader`` spends more time collating ten tiny tensors than the CNN spends
on them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class TrainSettings:
    """Local SGD settings of an honest client.

    These defaults are the run's (``RunConfig`` takes them from here); the seed code
    used batch 10, momentum 0.5 and lr 0.01 on CIFAR-10, where 0.05 trains digits faster.
    """

    local_epochs: int = 1
    batch_size: int = 10
    learning_rate: float = 0.05
    momentum: float = 0.5


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """Return the model's state as a list of numpy arrays, in ``state_dict`` order."""
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    """Load a list of numpy arrays (as :func:`get_weights` returns) into ``model``."""
    keys = list(model.state_dict().keys())
    if len(keys) != len(weights):
        raise ValueError(f"model has {len(keys)} tensors, got {len(weights)} arrays")
    state = OrderedDict((k, torch.as_tensor(np.asarray(w)))
                        for k, w in zip(keys, weights, strict=True))
    model.load_state_dict(state, strict=True)


def shuffled_batches(num_examples: int, batch_size: int, generator: torch.Generator,
                     device: torch.device | None = None) -> Iterator[torch.Tensor]:
    """Yield index tensors of one epoch: a seeded permutation cut into batches.

    The permutation is drawn on ``generator``'s (CPU) stream whatever the data's
    ``device``, so a run shuffles alike on CPU and GPU; it moves there once an epoch.
    """
    order = torch.randperm(num_examples, generator=generator)
    yield from torch.split(order if device is None else order.to(device), batch_size)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings,
          generator: torch.Generator, anomaly_weight: float = 0.0) -> float:
    """Train ``model`` in place with SGD; return the mean training loss over all batches.

    ``anomaly_weight`` (a in [0, 1), the backdoor's constrain-and-scale) trains on
    ``(1 - a) * cross-entropy + a * ||theta - theta_0||^2``, theta_0 the starting (global)
    weights: the loss of Bagdasaryan et al. (2020, Sec. 4) with the L2 distance as the
    anomaly term, which keeps the model close to the global one. The reported loss is
    the cross-entropy alone.
    """
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.learning_rate,
                                momentum=settings.momentum)
    criterion = nn.CrossEntropyLoss()
    start = [p.detach().clone() for p in model.parameters()] if anomaly_weight else []
    total, batches = 0.0, 0
    for _ in range(settings.local_epochs):
        for idx in shuffled_batches(len(y), settings.batch_size, generator, x.device):
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x[idx]), y[idx])
            if anomaly_weight:
                distance = sum(((p - p0) ** 2).sum()
                               for p, p0 in zip(model.parameters(), start, strict=True))
                ((1 - anomaly_weight) * loss + anomaly_weight * distance).backward()
            else:
                loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
    return total / max(batches, 1)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 250) -> tuple[float, float]:
    """Return ``(mean cross-entropy loss, accuracy)`` of ``model`` on ``(x, y)``.

    Batches of 250: the CIFAR CNN's activations of a batch then stay in the CPU's
    caches; batches of 1,000 made the 10,000 test images 1.45x slower on one thread.
    """
    model.eval()
    if len(y) == 0:
        return float("nan"), float("nan")
    criterion = nn.CrossEntropyLoss(reduction="sum")
    loss, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = model(xb)
        loss += criterion(logits, yb).item()
        correct += (logits.argmax(1) == yb).sum().item()
    return loss / len(y), correct / len(y)
