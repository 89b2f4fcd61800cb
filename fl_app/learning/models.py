"""The models a run can train, registered by name.

Each model states the input shape it accepts, so a run that pairs a model with
data of another shape is refused at start (see :func:`check_model_fits`), not
after the first forward pass on a client.

No model uses BatchNorm: Opacus' DP-SGD needs per-sample gradients, which
BatchNorm's cross-sample statistics break (``opacus.validators.ModuleValidator``
checks this before any private training).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 (torch convention)
from torch import nn

from fl_app.errors import ConfigError


class CifarCNN(nn.Module):
    """The seed's CIFAR-10 CNN (LeNet-5 style, 62,006 parameters).

    conv 3->6 k5, max-pool 2, conv 6->16 k5, max-pool 2, fc 400-120-84-10.
    """

    input_shape = (3, 32, 32)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits for a batch of 3x32x32 images."""
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class MnistCNN(nn.Module):
    """The seed's CNN for 28x28 grey images (MNIST, Fashion-MNIST; 21,840 parameters).

    conv 1->10 k5, max-pool 2, relu; conv 10->20 k5 with 2-D dropout, max-pool 2,
    relu; fc 320-50 with dropout; fc 50-10.
    """

    input_shape = (1, 28, 28)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits for a batch of 1x28x28 images."""
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        return self.fc2(x)


class DigitsCNN(nn.Module):
    """A small CNN for scikit-learn's 8x8 handwritten digits (the offline default).

    conv 1->16 k3 pad 1, max-pool 2; conv 16->32 k3 pad 1, max-pool 2; fc 128-10
    (6,154 parameters).
    """

    input_shape = (1, 8, 8)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits for a batch of 1x8x8 images."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it and which input it accepts."""

    factory: Callable[[int], nn.Module]
    input_shape: tuple[int, int, int]


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, factory: Callable[[int], nn.Module],
                   input_shape: tuple[int, int, int]) -> None:
    """Register a model under ``name`` (the value of the ``model`` run-config key)."""
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = ModelSpec(factory, input_shape)


register_model("cifar-cnn", CifarCNN, CifarCNN.input_shape)
register_model("mnist-cnn", MnistCNN, MnistCNN.input_shape)
register_model("digits-cnn", DigitsCNN, DigitsCNN.input_shape)


def get_model_spec(name: str) -> ModelSpec:
    """Return the registered model ``name``, or a :class:`ConfigError` listing them."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            "model", name, f"one of {sorted(MODELS)} (or 'auto' to follow the dataset)"
        ) from None


def check_model_fits(model_name: str, input_shape: tuple[int, ...]) -> None:
    """Refuse a model whose expected input shape differs from the data's."""
    expected = get_model_spec(model_name).input_shape
    if tuple(input_shape) != tuple(expected):
        fitting = sorted(n for n, s in MODELS.items() if s.input_shape == tuple(input_shape))
        raise ConfigError(
            "model",
            model_name,
            f"a model for inputs of shape {tuple(input_shape)}: {fitting or 'none registered'}"
            f" ({model_name!r} expects {expected})",
        )


def build_model(name: str, num_classes: int = 10) -> nn.Module:
    """Build a fresh model ``name`` with the torch RNG as it stands (seed it first)."""
    return get_model_spec(name).factory(num_classes)
