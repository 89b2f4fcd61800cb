"""A Byzantine Flower client: it wraps an honest client and sends a crafted update.

Composition, not inheritance: the wrapper is given the honest client (for its
partition id, properties and evaluation) and a ``train_fn`` that trains from
given weights on a given partition, deterministically, without DP. It then
forms its estimate of the honest updates and returns ``w + v``:

* ``own``: it trains on its own partition and uses its own update as the
  estimate (no collusion; the attackers' vectors differ).
* ``colluders``: the Byzantine clients act as one adversary. Each trains on the
  partitions of *all* colluders (the seeded assignment tells every one of them
  which those are), with the same seeds, and so computes the same mean; all
  send the identical vector without exchanging a byte. Bit-identical in a
  simulation; on real devices when they run the same build on the same kind of
  hardware (floating-point results may differ across CPUs or library builds).

Byzantine clients never train with DP and never touch an honest client's data:
``train_fn`` is only ever called with Byzantine partitions.

Before ``start_round`` (the seed's ``--addtime``) a Byzantine client behaves
honestly. Data attacks (label flipping) train on poisoned labels and send the
result; fault attacks (``nan``, ``crash``, ``wrong-shape``) exist to test that
the server rejects malformed results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from flwr.client import NumPyClient
from flwr.common import NDArrays, Scalar

from attacks.errors import AttackParameterError
from attacks.registry import AttackKind, craft_byzantine_updates, get_attack
from strategies.updates import flatten, unflatten

KNOWLEDGE_MODES = ("own", "colluders")
# (images, labels) -> poisoned (images, labels), as numpy arrays
Poison = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
# (parameters, server_round, partition_id, poison) -> (weights, num_examples, loss)
# (..., anomaly_weight: the pull towards the global model of constrain-and-scale)
TrainFn = Callable[..., tuple[NDArrays, int, float]]


class ByzantineClient(NumPyClient):
    """Wraps an honest ``NumPyClient`` and replaces its update from ``start_round`` on."""

    def __init__(self, honest: NumPyClient, *, partition_id: int, train_fn: TrainFn,
                 attack: str, knowledge: str, colluders: Sequence[int], start_round: int,
                 seed: int, round_key: str, make_metrics: Callable[[float], dict[str, Scalar]],
                 attack_params: dict[str, Any] | None = None, num_classes: int = 10) -> None:
        self.spec = get_attack(attack)
        if knowledge not in KNOWLEDGE_MODES:
            raise AttackParameterError(
                f"a Byzantine client knows {list(KNOWLEDGE_MODES)}; got {knowledge!r} "
                "('omniscient' is a server-side hook in simulations)")
        if partition_id not in colluders:
            raise AttackParameterError(f"partition {partition_id} is not among the "
                                       f"Byzantine partitions {list(colluders)}")
        self.honest = honest
        self.partition_id = partition_id
        self.train_fn = train_fn
        self.knowledge = knowledge
        self.colluders = sorted(colluders)
        self.start_round = start_round
        self.seed = seed
        self.attack_params = dict(attack_params or {})
        self.num_classes = num_classes
        self.round_key = round_key
        self.make_metrics = make_metrics  # the app's metric names, Byzantine flag set

    def get_properties(self, config: dict[str, Scalar]) -> dict[str, Scalar]:
        """The honest client's properties (a Byzantine node does not announce itself)."""
        return self.honest.get_properties(config)

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]
                 ) -> tuple[float, int, dict[str, Scalar]]:
        """Evaluate like the honest client."""
        return self.honest.evaluate(parameters, config)

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]
            ) -> tuple[NDArrays, int, dict[str, Scalar]]:
        """Train honestly before ``start_round``; from then on send the crafted update."""
        server_round = int(config[self.round_key])
        active = server_round >= self.start_round and self.spec.kind is not AttackKind.NONE
        poison = None
        if active and self.spec.kind is AttackKind.DATA:
            poison = self._poisoner(server_round)
        anomaly = {"anomaly_weight": self.attack_params["anomaly_weight"]} if (
            poison is not None and self.attack_params.get("anomaly_weight")) else {}
        weights, num_examples, loss = self.train_fn(parameters, server_round,
                                                    self.partition_id, poison, **anomaly)
        metrics = self.make_metrics(loss)
        if active and self.spec.kind is AttackKind.DATA and self.spec.scale is not None:
            base = flatten(parameters)  # model replacement: scale the poisoned update
            scaled = self.spec.scale(flatten(weights) - base, **self.attack_params)
            return unflatten(base + scaled, parameters), num_examples, metrics
        if not active or self.spec.kind is AttackKind.DATA:
            return weights, num_examples, metrics
        honest_updates = self._estimate(parameters, server_round, weights)
        row, q = self._my_row()
        rng = np.random.default_rng([self.seed, server_round, *([] if self.knowledge ==
                                     "colluders" else [self.partition_id])])
        crafted = craft_byzantine_updates(self.spec.name, honest_updates, q, rng,
                                          **self.attack_params)[row]
        if crafted.size != honest_updates.shape[1]:  # "wrong-shape": send it as it is
            return [crafted.astype(np.float32)], num_examples, metrics
        return unflatten(flatten(parameters) + crafted, parameters), num_examples, metrics

    def _poisoner(self, server_round: int) -> Poison:
        """The data attack bound to its parameters and a generator of (seed, round, partition)."""
        rng = np.random.default_rng([self.seed, server_round, self.partition_id])
        params = {k: v for k, v in self.attack_params.items() if k in self.spec.param_names}
        return lambda x, y: self.spec.fn(x, y, self.num_classes, rng, **params)

    def _my_row(self) -> tuple[int, int]:
        """Which crafted row this client sends, out of how many crafted."""
        if self.knowledge == "colluders":
            return self.colluders.index(self.partition_id), len(self.colluders)
        return 0, 1

    def _estimate(self, parameters: NDArrays, server_round: int,
                  own_weights: NDArrays) -> np.ndarray:
        """The honest updates this client knows: its own, or all its colluders'."""
        base = flatten(parameters)
        if self.knowledge == "own":
            return (flatten(own_weights) - base)[None, :]
        rows = []
        for pid in self.colluders:  # only Byzantine partitions: no honest client's data
            weights = (own_weights if pid == self.partition_id
                       else self.train_fn(parameters, server_round, pid, None)[0])
            rows.append(flatten(weights) - base)
        return np.stack(rows)
