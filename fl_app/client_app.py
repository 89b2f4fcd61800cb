"""ClientApp: an honest client that trains on its partition (optionally with DP-SGD).

Thin by design: the training loop is in :mod:`fl_app.task`, data in
:mod:`fl_app.learning.data`, the Byzantine wrapper in :mod:`attacks`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from functools import cached_property, lru_cache

import numpy as np
import torch
from flwr.client import Client, ClientApp, NumPyClient
from flwr.common import ConfigRecord, Context, NDArrays, RecordDict, Scalar

from fl_app import keys
from fl_app.audit.canaries import canary_attackers, canary_examples, plan_canaries
from fl_app.audit.members import member_rows
from fl_app.config import RunConfig, parse_run_config, with_overrides
from fl_app.errors import ConfigError
from fl_app.federation.roles import build_run_model, is_byzantine, wrap_byzantine
from fl_app.learning.data import DataConfig, partition_indices
from fl_app.learning.device import cuda_devices_seen, load_partition_on, resolve_device
from fl_app.privacy.levels import DP_LEVELS
from fl_app.privacy.randomness import dp_generator, resolve_noise_source, running_in_simulation
from fl_app.task import evaluate, get_weights, set_weights, train


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from the run's seed and, e.g., the round and partition.

    Hashing (not adding) keeps streams of neighbouring rounds and partitions apart.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@lru_cache(maxsize=8)
def _audit_training_set(device: torch.device, data: DataConfig, partition_id: int,
                        num_partitions: int, exclude_members: int, num_canaries: int,
                        num_attackers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An audit run's training examples of a partition: its members left out, its canaries added.

    Kept per process (like the partition itself): a client is built for every
    message, and masking and concatenating again each round would copy the
    partition each time. The arguments are the run-config values the set depends on
    (a RunConfig itself is not hashable).
    """
    x, y = load_partition_on(device, data, partition_id, num_partitions)
    if exclude_members:  # a shadow federation of the membership audit
        rows = partition_indices(data, num_partitions)[partition_id]
        keep = torch.from_numpy(~np.isin(rows, member_rows(data, exclude_members))).to(device)
        x, y = x[keep], y[keep]
    if not num_canaries:
        return x, y
    plan = plan_canaries(data, num_canaries, num_partitions, num_attackers)
    extra_x, extra_y = canary_examples(plan, data, partition_id)
    return torch.cat([x, extra_x.to(device)]), torch.cat([y, extra_y.to(device)])


class HonestClient(NumPyClient):
    """Trains the global model on one partition with local SGD and reports its loss.

    ``simulated`` says whether this client runs inside Flower's Simulation Engine;
    only then may its DP randomness be seeded (:mod:`fl_app.privacy.randomness`). It
    defaults to ``False``, a real device, so a client built without it never uses
    noise the server could regenerate.
    """

    def __init__(self, cfg: RunConfig, partition_id: int, num_partitions: int,
                 state: RecordDict | None = None, *, simulated: bool = False) -> None:
        self.cfg = cfg
        self.simulated = simulated
        # Survives rounds (Flower keeps a node's context.state): the DP accountant.
        self.state = state if state is not None else RecordDict()
        self.partition_id = partition_id
        self.num_partitions = num_partitions

    def get_properties(self, config: dict[str, Scalar]) -> dict[str, Scalar]:
        """Tell the server which partition this node holds (seeded sampling) and its GPUs.

        The CUDA devices this process sees let the start check refuse ``device='cuda'``
        for clients without one, before round 1.
        """
        return {keys.PARTITION_ID: self.partition_id, keys.CUDA_DEVICES: cuda_devices_seen()}

    @cached_property
    def device(self) -> torch.device:
        """Where this client trains and evaluates: the run's ``device``, resolved here.

        Resolved on first use, not when the client is built: a client asked only for
        its properties answers them (the start check reads its CUDA devices) even where
        the device it was asked for does not exist.
        """
        return resolve_device(self.cfg.device)

    def model(self, parameters: NDArrays) -> torch.nn.Module:
        """The run's model holding ``parameters``, on this client's device."""
        model = build_run_model(self.cfg).to(self.device)
        set_weights(model, parameters)
        return model

    def data(self, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """This client's examples (decoded, moved to its device once per process) and canaries."""
        if split == "train" and (self.cfg.audit_exclude_members or self.cfg.audit_canaries):
            return _audit_training_set(self.device, self.cfg.data, self.partition_id,
                                       self.num_partitions, self.cfg.audit_exclude_members,
                                       self.cfg.audit_canaries, canary_attackers(self.cfg))
        return load_partition_on(self.device, self.cfg.data, self.partition_id,
                                 self.num_partitions, split)

    def train_weights(self, parameters: NDArrays, server_round: int,
                      partition_id: int | None = None,
                      poison: Callable[[np.ndarray, np.ndarray],
                                       tuple[np.ndarray, np.ndarray]] | None = None,
                      anomaly_weight: float = 0.0) -> tuple[NDArrays, int, float]:
        """Train from ``parameters`` on a partition (this one by default), without DP.

        Deterministic in (seed, round, partition). Returns the new weights, the
        number of examples and the mean training loss. The Byzantine wrapper calls
        this to form its estimate of honest updates (``poison`` transforms the images and
        labels of a data attack, ``anomaly_weight`` its pull towards ``parameters``:
        :func:`~fl_app.task.train`).
        """
        pid = self.partition_id if partition_id is None else partition_id
        seed = derived_seed(self.cfg.seed, server_round, pid)
        torch.manual_seed(seed)  # dropout draws from the global generators (CUDA's too)
        model = self.model(parameters)
        x, y = (self.data() if pid == self.partition_id
                else load_partition_on(self.device, self.cfg.data, pid, self.num_partitions))
        if poison is not None:  # data attacks are numpy functions: poison on the CPU
            x_poisoned, y_poisoned = poison(x.cpu().numpy(), y.cpu().numpy())
            x = torch.from_numpy(x_poisoned).to(self.device)
            y = torch.from_numpy(y_poisoned).to(self.device)
        loss = train(model, x, y, self.cfg.train, torch.Generator().manual_seed(seed),
                     anomaly_weight)
        return get_weights(model), len(y), loss

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]
            ) -> tuple[NDArrays, int, dict[str, Scalar]]:
        """Train locally (with DP-SGD if ``dp``); return the new weights, count and metrics."""
        server_round = int(config[keys.SERVER_ROUND])
        if self.cfg.client_dp:
            return self.fit_private(parameters, server_round,
                                    config.get(keys.DP_ACCOUNTANT_STATE))
        weights, num_examples, loss = self.train_weights(parameters, server_round)
        return weights, num_examples, self.metrics(loss, epsilon=-1.0)

    def metrics(self, loss: float, epsilon: float, trained: bool = True,
                status: str = "") -> dict[str, Scalar]:
        """The metrics every honest fit reports."""
        return {keys.PARTITION_ID: self.partition_id, keys.TRAIN_LOSS: loss,
                keys.BYZANTINE: False, keys.EPSILON: epsilon, keys.TRAINED: int(trained),
                keys.STATUS: status}

    def fit_private(self, parameters: NDArrays, server_round: int,
                    server_copy: Scalar | None = None) -> tuple[NDArrays, int, dict[str, Scalar]]:
        """DP training at ``dp-level`` on this partition, the accountant carried over.

        ``record``: DP-SGD; ``client``: plain training, then the whole update clipped
        and noised here (:mod:`fl_app.privacy.levels`).

        The accountant lives in this node's ``context.state``; a node without one
        (the first round, or a run resumed from a checkpoint, whose nodes start
        empty) takes ``server_copy``, the accountant it reported last (the server
        sends it back on resume). The node's own copy always wins, so a server
        cannot rewind a budget the node has kept.

        The batch masks and the noise come from :func:`~fl_app.privacy.randomness.dp_generator`:
        seeded only in a simulation (when ``dp-noise-source`` allows), otherwise fresh
        OS entropy every round; a request for seeded noise outside a simulation is
        refused here too, whatever the server checked.

        A client whose next round would take its epsilon past ``dp-max-epsilon``
        does not train: it returns zero examples (the server leaves it out and
        records why) and the accountant is not charged.
        """
        # First, so that a device refuses seeded noise even when it would not train.
        source = resolve_noise_source(self.cfg.dp_noise_source, self.simulated,
                                      self.cfg.dp_secure_mode)
        stored = self.state.get(keys.DP_ACCOUNTANT_STATE)
        state = str(stored["accountant"]) if stored else (
            str(server_copy) if server_copy else None)
        # `source` decides whether the seed is used at all ("seeded" only): on a device
        # every draw of this fit, dropout included, starts from fresh OS entropy.
        generator = dp_generator(
            source, derived_seed(self.cfg.seed, server_round, self.partition_id, "dp"))
        torch.manual_seed(int(torch.randint(2**62, (), generator=generator)))  # dropout
        model = self.model(parameters)
        x, y = self.data()
        level = DP_LEVELS[self.cfg.dp_level]  # record: DP-SGD; client: the whole update
        outcome = level.client_round(model, x, y, self.cfg.train, self.cfg.dp_settings,
                                     self.cfg.dp_clipping_norm, self.cfg.num_server_rounds, state,
                                     generator, self.num_partitions)
        metrics = {**self.metrics(outcome.loss, outcome.epsilon, outcome.trained,
                                  outcome.status), keys.DP_ACCOUNTANT_STATE: outcome.accountant}
        if not outcome.trained:
            return parameters, 0, metrics
        self.state[keys.DP_ACCOUNTANT_STATE] = ConfigRecord({"accountant": outcome.accountant})
        return get_weights(model), len(y), {**metrics, keys.DP_NOISE_SOURCE: source}

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]
                 ) -> tuple[float, int, dict[str, Scalar]]:
        """Evaluate the global model on this client's share of the test set."""
        x, y = self.data("test")
        loss, acc = evaluate(self.model(parameters), x, y)
        return float(loss), len(y), {keys.ACCURACY: float(acc),
                                     keys.PARTITION_ID: self.partition_id}


def node_partition(node_config: dict[str, Scalar]) -> tuple[int, int]:
    """Read ``partition-id`` and ``num-partitions`` from the node config, or say how to set them."""
    try:
        pid, n = int(node_config["partition-id"]), int(node_config["num-partitions"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(
            "partition-id/num-partitions", dict(node_config), "integers in the node config",
            "Simulation sets them; on a real device start the SuperNode with "
            "--node-config \"partition-id=0 num-partitions=10\".") from None
    if not 0 <= pid < n:
        raise ConfigError("partition-id", pid, f"an integer in [0, num-partitions={n})")
    return pid, n


def client_fn(context: Context, overrides: Mapping[str, Scalar] | None = None) -> Client:
    """Build this node's client from the run config (plus ``overrides``) and node config."""
    cfg = parse_run_config({**context.run_config, **(overrides or {})}, overrides)
    if "data-dir" in context.node_config:  # a real device points at its own copy
        cfg = with_overrides(cfg, data_dir=str(context.node_config["data-dir"]))
    torch.set_num_threads(cfg.client_threads)
    partition_id, num_partitions = node_partition(context.node_config)
    client = HonestClient(cfg, partition_id, num_partitions, context.state,
                          simulated=running_in_simulation())
    if is_byzantine(cfg, context.node_config, partition_id, num_partitions):
        return wrap_byzantine(client, cfg, partition_id, num_partitions).to_client()
    return client.to_client()


def make_client_app(overrides: Mapping[str, Scalar] | None = None) -> ClientApp:
    """A ClientApp whose run config is Flower's plus ``overrides`` (in-process runs)."""
    bound = dict(overrides or {})

    def client_fn_with_overrides(context: Context):  # Flower requires exactly this signature
        return client_fn(context, bound)

    return ClientApp(client_fn=client_fn_with_overrides)


app = make_client_app()
