"""The app's glue: from the run config to models, attacks and roles.

The attack math and the Byzantine client live in :mod:`attacks`, DP-SGD in
:mod:`fl_app.privacy`; this module reads the run and node configs and composes
the pieces, so the server and the clients build them the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.client import NumPyClient
from flwr.common import Scalar
from torch import nn

from attacks.assignment import byzantine_partitions
from attacks.byzantine_client import ByzantineClient
from attacks.omniscient import OmniscientAdversary
from fl_app import keys
from fl_app.config import RunConfig
from fl_app.learning.data import DATASETS
from fl_app.learning.models import build_model
from fl_app.privacy import make_private_compatible
from strategies.pipeline import AggregationPipeline


def build_run_model(cfg: RunConfig) -> nn.Module:
    """The run's model, made DP-compatible (BatchNorm -> GroupNorm) when ``dp`` is on.

    Server and clients both build through here, so their ``state_dict`` keys match.
    """
    model = build_model(cfg.model_name, DATASETS[cfg.dataset].num_classes)
    return make_private_compatible(model) if cfg.dp else model


def aggregation_options(cfg: RunConfig) -> dict[str, Any]:
    """The keywords of :func:`strategies.registry.make_strategy` that say how to aggregate.

    The declared f, the strategy's own parameters, the pre-aggregation steps, the
    server optimiser and the seed of randomized pre-aggregation (bucketing): the
    ServerApp and the start checks build the strategy from the same options.
    """
    return {"num_byzantine": cfg.declared_byzantine, "params": cfg.strategy_params,
            "preaggregation": cfg.preaggregation_steps,
            "server_learning_rate": cfg.server_learning_rate,
            "server_momentum": cfg.server_momentum, "seed": cfg.seed}


def defence_of(cfg: RunConfig) -> Callable[[np.ndarray], np.ndarray]:
    """The run's aggregation as a function of the updates, for attacks told the defence.

    Kerckhoffs: a defence-aware attack (``opt-ipm``, ``opt-alie``) knows the rule, its
    parameters, the declared f and the pre-aggregation, but not the server's state (a
    fresh centre for centered clipping) or its seed (its own for bucketing). When the
    attacker's estimate holds too few updates for the rule's size condition, it
    assumes the plain mean.
    """
    options = aggregation_options(cfg)

    def defence(updates: np.ndarray) -> np.ndarray:
        pipeline = AggregationPipeline(cfg.strategy, options["num_byzantine"],
                                       options["params"], options["preaggregation"],
                                       seed=cfg.seed + 1)
        try:
            return pipeline.aggregate(updates, [1.0] * len(updates), 0).update
        except ValueError:  # e.g. Krum's n >= 2f + 3 on a colluders-only estimate
            return np.mean(updates, axis=0, dtype=np.float64)

    return defence


def is_byzantine(cfg: RunConfig, node_config: dict[str, Scalar], partition_id: int,
                 num_partitions: int) -> bool:
    """Whether this node runs as a Byzantine client.

    A node config ``byzantine`` (real devices) decides; otherwise the run's seeded
    draw of ``num-attackers`` partitions (simulation).
    """
    if not cfg.attack_settings.client_side:
        return False
    if keys.BYZANTINE in node_config:
        return str(node_config[keys.BYZANTINE]).lower() in ("true", "1")
    return partition_id in byzantine_partitions(cfg.seed, num_partitions, cfg.num_attackers)


def sampled_per_round(cfg: RunConfig, num_nodes: int) -> int:
    """Clients sampled per round, as Flower's FedAvg computes it (min_fit_clients = 1)."""
    return max(int(num_nodes * cfg.fraction_fit), 1)


def attackers_per_round(cfg: RunConfig, num_partitions: int, colluders: tuple[int, ...]) -> float:
    """The attackers a client expects among a round's sampled clients, itself included.

    Colluders know their number: of ``len(colluders)`` among ``num_partitions`` nodes,
    a round that samples ``s`` holds ``len(colluders) * s / num_partitions`` on average
    (all of them when every node is sampled). An attacker acting alone counts itself only.
    """
    if cfg.attack_settings.knowledge != "colluders":
        return 1.0
    sampled = sampled_per_round(cfg, num_partitions)
    return max(1.0, len(colluders) * sampled / num_partitions)


def wrap_byzantine(honest: Any, cfg: RunConfig, partition_id: int,
                   num_partitions: int) -> NumPyClient:
    """Compose a :class:`ByzantineClient` around an honest ``HonestClient``."""
    colluders = byzantine_partitions(cfg.seed, num_partitions, cfg.num_attackers)
    if partition_id not in colluders:  # Byzantine by node config on a real device
        colluders = (partition_id,)

    def make_metrics(loss: float) -> dict[str, Scalar]:
        # The honest client's metrics, flagged Byzantine; no DP, so no epsilon.
        return {**honest.metrics(loss, epsilon=-1.0), keys.BYZANTINE: True}

    attack = cfg.attack_settings
    return ByzantineClient(
        honest, partition_id=partition_id, train_fn=honest.train_weights, attack=attack.name,
        knowledge=attack.knowledge, colluders=colluders, start_round=attack.start_round,
        seed=cfg.seed, round_key=keys.SERVER_ROUND, make_metrics=make_metrics,
        attack_params=attack.crafting_params(sampled_per_round(cfg, num_partitions),
                                             declared_f=cfg.declared_byzantine,
                                             defence=defence_of(cfg),
                                             server_learning_rate=cfg.server_learning_rate,
                                             attackers_per_round=attackers_per_round(
                                                 cfg, num_partitions, colluders)),
        num_classes=DATASETS[cfg.dataset].num_classes)


def omniscient_hook(cfg: RunConfig) -> OmniscientAdversary | None:
    """The server-side adversary when the run asks for it, else None."""
    attack = cfg.attack_settings
    if not attack.omniscient:
        return None
    return OmniscientAdversary(attack.name, attack.num_attackers, attack.start_round,
                               cfg.seed, attack.crafting_params(
                                   declared_f=cfg.declared_byzantine, defence=defence_of(cfg)))

