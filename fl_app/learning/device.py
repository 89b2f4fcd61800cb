"""Where tensors live: the ``device`` run-config key, resolved in each process that computes.

``device``
  * ``"auto"`` (default): the first CUDA device this process sees, else the CPU. A
    simulated client is a Ray actor, and Ray shows an actor only the GPUs it reserved
    for it (``CUDA_VISIBLE_DEVICES``: none with ``client-resources-num-gpus = 0``, one
    GPU with a fraction of it), so ``auto`` trains on a GPU exactly where one was given.
  * ``"cpu"``.
  * ``"cuda"`` / ``"cuda:N"``: CUDA device 0 / N as this process numbers them (in a
    simulated client that is among its reserved GPUs, so ``cuda`` is the one to use
    with fractional GPUs). A process that sees no such device refuses the run with a
    :class:`~fl_app.errors.ConfigError` naming the key: the ServerApp at start, every
    client as well, and the start check asks a client before round 1
    (:func:`cuda_devices_seen`, reported in its properties).

Every process resolves the key for itself (:func:`resolve_device`): the server for its
central evaluation, each client for its training (honest, Byzantine, either DP engine),
an audit for its model. Data decoded once per process moves to the device once per
process too (:func:`load_partition_on`). Weights travel as numpy
arrays (:func:`fl_app.task.get_weights` copies them to the CPU), so a GPU client and a
CPU server federate as any two clients do.
"""

from __future__ import annotations

import functools
import re

import torch

from fl_app.errors import ConfigError
from fl_app.learning.data import PARTITION_CACHE_SIZE, DataConfig, load_partition, load_test_set

KEY_DEVICE = "device"
DEVICE_CHOICES = "'auto', 'cpu', 'cuda' or 'cuda:N'"
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_rule(name: str) -> str | None:
    """The run-config rule of ``device``: ``None`` if ``name`` is well formed, else what is."""
    return None if _DEVICE_PATTERN.fullmatch(name) else DEVICE_CHOICES


def cuda_devices_seen() -> int:
    """How many CUDA devices this process sees (0 without CUDA, or in a GPU-less Ray actor)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cuda_index(name: str) -> int | None:
    """The CUDA device index ``name`` asks for (``cuda`` is 0), ``None`` for auto and cpu.

    >>> cuda_index("cuda"), cuda_index("cuda:2"), cuda_index("auto")
    (0, 2, None)
    """
    if not name.startswith("cuda"):
        return None
    return int(name.partition(":")[2] or 0)


def device_error(name: str, seen: int, where: str) -> ConfigError | None:
    """The error of asking for ``name`` where ``seen`` CUDA devices exist, or ``None``.

    ``where`` says whose process this is (``"this process"``, ``"the clients"``).
    """
    problem = device_rule(name)
    if problem:
        return ConfigError(KEY_DEVICE, name, problem)
    index = cuda_index(name)
    if index is None or index < seen:
        return None
    found = f"{seen} CUDA device{'s' if seen != 1 else ''}" if seen else "no CUDA device"
    return ConfigError(
        KEY_DEVICE, name, f"'auto' or 'cpu' ({where}: {found})",
        "device='auto' trains on a GPU wherever a process has one. A simulated client sees "
        "only the GPUs Ray reserved for it: give each a share with --federation-config "
        "\"client-resources-num-gpus=0.25\" (and device='cuda', not 'cuda:N', inside it).")


def resolve_device(name: str) -> torch.device:
    """The device this process computes on for ``device = name``, or a ConfigError.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    seen = cuda_devices_seen()
    error = device_error(name, seen, "this process")
    if error is not None:
        raise error
    if name == "auto":
        return torch.device("cuda", 0) if seen else torch.device("cpu")
    index = cuda_index(name)
    return torch.device("cpu") if index is None else torch.device("cuda", index)


def simulated_clients_device_error(name: str, num_gpus_per_client: float) -> ConfigError | None:
    """``device='cuda[:N]'`` for simulated clients that Ray gives no GPU share, or ``None``.

    Ray hides every GPU from an actor that reserved none (``CUDA_VISIBLE_DEVICES=''``).
    """
    if cuda_index(name) is None or num_gpus_per_client > 0:
        return None
    return ConfigError(
        KEY_DEVICE, name, "'auto' or 'cpu' when clients reserve no GPU",
        "Ray shows a simulated client only the GPUs it reserves: give each client a share "
        "(num_gpus_per_client=0.25, or client-resources-num-gpus with flwr run).")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters (the CPU for a model without any)."""
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


@functools.lru_cache(maxsize=PARTITION_CACHE_SIZE)
def _partition_on_accelerator(device: torch.device, cfg: DataConfig, partition_id: int,
                              num_partitions: int, split: str
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_partition(cfg, partition_id, num_partitions, split)
    return x.to(device), y.to(device)


def load_partition_on(device: torch.device, cfg: DataConfig, partition_id: int,
                      num_partitions: int, split: str = "train"
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`load_partition` on ``device``: copied there once per process, then kept.

    On the CPU it is :func:`load_partition` itself (no copy).
    """
    if device.type == "cpu":
        return load_partition(cfg, partition_id, num_partitions, split)
    return _partition_on_accelerator(device, cfg, partition_id, num_partitions, split)


@functools.lru_cache(maxsize=2)
def _test_set_on_accelerator(device: torch.device, cfg: DataConfig
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_test_set(cfg)
    return x.to(device), y.to(device)


def load_test_set_on(device: torch.device, cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`load_test_set` on ``device``, copied once per process (the CPU: no copy)."""
    if device.type == "cpu":
        return load_test_set(cfg)
    return _test_set_on_accelerator(device, cfg)
