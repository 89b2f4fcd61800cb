"""The app's glue: from the run config to models, DP settings, attacks and roles.

The attack math and the Byzantine client live in :mod:`attacks`, DP-SGD in
:mod:`fl_app.privacy`; this module reads the run and node configs and composes
the pieces, so the server and the clients build them the same way.
"""

from __future__ import annotations

from typing import Any

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
from fl_app.privacy import DPSettings, make_private_compatible


def build_run_model(cfg: RunConfig) -> nn.Module:
    """The run's model, made DP-compatible (BatchNorm -> GroupNorm) when ``dp`` is on.

    Server and clients both build through here, so their ``state_dict`` keys match.
    """
    model = build_model(cfg.model_name, DATASETS[cfg.dataset].num_classes)
    return make_private_compatible(model) if cfg.dp else model


def dp_settings(cfg: RunConfig) -> DPSettings:
    """The DP-SGD settings of the run's honest clients (0 means "not set" in the config)."""
    return DPSettings(
        noise_multiplier=cfg.dp_noise_multiplier, max_grad_norm=cfg.dp_max_grad_norm,
        delta=cfg.dp_delta or None, accountant=cfg.dp_accountant,
        target_epsilon=cfg.dp_target_epsilon or None, max_epsilon=cfg.dp_max_epsilon or None,
        grad_sample_mode=cfg.dp_grad_sample_mode, secure_mode=cfg.dp_secure_mode)


def attack_params(cfg: RunConfig, num_clients: int | None = None) -> dict[str, Any]:
    """The attack's keyword parameters from the run config.

    ``num_clients`` is the number of clients sampled per round; ALIE's ``z_max``
    depends on it (the omniscient hook knows it exactly and passes ``None``).
    """
    if cfg.attack == "ipm":
        return {"epsilon": cfg.ipm_epsilon}
    if cfg.attack == "alie" and num_clients is not None:
        return {"num_clients": num_clients}
    return {}


def attack_is_client_side(cfg: RunConfig) -> bool:
    """True when Byzantine *clients* carry the attack (not the omniscient server hook)."""
    return cfg.attack != "none" and not cfg.omniscient


def is_byzantine(cfg: RunConfig, node_config: dict[str, Scalar], partition_id: int,
                 num_partitions: int) -> bool:
    """Whether this node runs as a Byzantine client.

    A node config ``byzantine`` (real devices) decides; otherwise the run's seeded
    draw of ``num-attackers`` partitions (simulation).
    """
    if not attack_is_client_side(cfg):
        return False
    if keys.BYZANTINE in node_config:
        return str(node_config[keys.BYZANTINE]).lower() in ("true", "1")
    return partition_id in byzantine_partitions(cfg.seed, num_partitions, cfg.num_attackers)


def sampled_per_round(cfg: RunConfig, num_nodes: int) -> int:
    """Clients sampled per round, as Flower's FedAvg computes it (min_fit_clients = 1)."""
    return max(int(num_nodes * cfg.fraction_fit), 1)


def wrap_byzantine(honest: Any, cfg: RunConfig, partition_id: int,
                   num_partitions: int) -> NumPyClient:
    """Compose a :class:`ByzantineClient` around an honest ``HonestClient``."""
    colluders = byzantine_partitions(cfg.seed, num_partitions, cfg.num_attackers)
    if partition_id not in colluders:  # Byzantine by node config on a real device
        colluders = (partition_id,)

    def make_metrics(loss: float) -> dict[str, Scalar]:
        # The honest client's metrics, flagged Byzantine; no DP, so no epsilon.
        return {**honest.metrics(loss, epsilon=-1.0), keys.BYZANTINE: True}

    return ByzantineClient(
        honest, partition_id=partition_id, train_fn=honest.train_weights, attack=cfg.attack,
        knowledge=cfg.ipm_knowledge, colluders=colluders, start_round=cfg.attack_start_round,
        seed=cfg.seed, round_key=keys.SERVER_ROUND, make_metrics=make_metrics,
        attack_params=attack_params(cfg, sampled_per_round(cfg, num_partitions)),
        num_classes=DATASETS[cfg.dataset].num_classes)


def omniscient_hook(cfg: RunConfig) -> OmniscientAdversary | None:
    """The server-side adversary when the run asks for it, else None."""
    if not cfg.omniscient:
        return None
    return OmniscientAdversary(cfg.attack, cfg.num_attackers, cfg.attack_start_round,
                               cfg.seed, attack_params(cfg))

