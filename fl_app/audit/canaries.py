"""Canaries for the one-run audit: mislabelled test images, each trained on with probability 1/2.

Steinke, Nasr and Jagielski (NeurIPS 2023) audit one training run with ``m`` canaries
included independently at random. Here a canary is a test-split image with a wrong
label (``(y + k) mod classes``, ``k`` uniform in ``1 .. classes - 1``): an example the
model can only fit by memorising it, which is what DP bounds. Every canary is given to
one honest client (round-robin over the honest partitions in a seeded order), which
adds it to its training data when it is *included*; the draw is a pure function of
the run's seed (:func:`plan_canaries`), so the auditor, who ran the experiment, knows
``S``. Byzantine partitions hold none (they do not run DP).

The central evaluation still uses the whole test set with its true labels: the
canaries are at most ``m`` of its images, and an included canary the model fits costs
its test accuracy one image.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from attacks.assignment import byzantine_partitions
from fl_app.learning.data import DATASETS, DataConfig, load_test_set
from fl_app.learning.device import model_device

if TYPE_CHECKING:
    from fl_app.config import RunConfig

CANARY_STREAM = 0xCA9A  # the generator stream of the canary draw, apart from every other


@dataclass(frozen=True)
class CanaryPlan:
    """The run's canaries: test rows, their wrong labels, owners, and who was included."""

    rows: np.ndarray  # rows of the test split
    labels: np.ndarray  # the wrong labels trained on
    owners: np.ndarray  # the partition each canary is given to
    included: np.ndarray  # S: True when the owner trains on it

    def of_partition(self, partition_id: int) -> np.ndarray:
        """The indices (into the plan) of the canaries ``partition_id`` trains on."""
        return np.flatnonzero((self.owners == partition_id) & self.included)


@functools.lru_cache(maxsize=8)
def plan_canaries(data: DataConfig, num_canaries: int, num_partitions: int,
                  num_attackers: int) -> CanaryPlan:
    """The canaries of a run (deterministic in ``data.seed``)."""
    _, y_test = load_test_set(data)
    if not 1 <= num_canaries <= len(y_test):
        raise ValueError(f"num_canaries must be in [1, {len(y_test)}] (the test split)")
    rng = np.random.default_rng([CANARY_STREAM, data.seed])
    rows = np.sort(rng.choice(len(y_test), size=num_canaries, replace=False))
    classes = DATASETS[data.dataset].num_classes
    labels = (y_test.numpy()[rows] + rng.integers(1, classes, size=num_canaries)) % classes
    byzantine = set(byzantine_partitions(data.seed, num_partitions, num_attackers))
    honest = np.array([p for p in range(num_partitions) if p not in byzantine], dtype=np.int64)
    owners = np.resize(rng.permutation(honest), num_canaries)
    included = rng.random(num_canaries) < 0.5
    return CanaryPlan(rows, labels.astype(np.int64), owners, included)


def canary_attackers(cfg: RunConfig) -> int:
    """The nodes of the run ``cfg`` that hold no canary: its client-side attackers."""
    return cfg.num_attackers if cfg.attack_settings.client_side else 0


def run_canaries(cfg: RunConfig, num_partitions: int) -> CanaryPlan:
    """The canaries of the run ``cfg`` on ``num_partitions`` nodes (``audit-canaries``)."""
    return plan_canaries(cfg.data, cfg.audit_canaries, num_partitions, canary_attackers(cfg))


def canary_examples(plan: CanaryPlan, data: DataConfig, partition_id: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and wrong labels of the canaries ``partition_id`` trains on."""
    x_test, _ = load_test_set(data)
    mine = plan.of_partition(partition_id)
    return x_test[plan.rows[mine]], torch.from_numpy(plan.labels[mine])


@torch.no_grad()
def canary_scores(model: torch.nn.Module, plan: CanaryPlan, data: DataConfig) -> np.ndarray:
    """Each canary's score: minus the model's loss on its wrong label (higher: trained on)."""
    x_test, _ = load_test_set(data)
    model.eval()
    logits = model(x_test[plan.rows].to(model_device(model))).cpu()
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(plan.labels),
                                             reduction="none")
    return -loss.numpy().astype(np.float64)
