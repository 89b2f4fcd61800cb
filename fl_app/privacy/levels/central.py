"""Central DP (``dp-level = 'central'``): the server clips, averages and adds the noise.

McMahan, Ramage, Talwar and Zhang (ICLR 2018), through Flower's own
``DifferentialPrivacyServerSideFixedClipping``: each update is clipped to ``S``
(``dp-clipping-norm``, Flower's ``compute_clip_model_update``), the clipped updates are
averaged with equal weights, and ``N(0, (sigma S / m)^2)`` (Flower's ``compute_stdv``) is
added to the average for the ``m`` updates averaged. Each round is
one sampled Gaussian mechanism on the clients' data with noise multiplier ``sigma`` and
rate ``q = m / K`` for ``K`` clients; an Opacus accountant (``dp-accountant``) composes
them, ``delta`` is ``dp-delta`` or ``1 / (10 K)``. Every honest client's epsilon is that
one number, reported in ``rounds.csv`` and ``clients.csv`` like the other levels'.

What it protects: a client's whole dataset from whoever sees the *global model* (other
clients, the public). Not from the server, which sees every update in the clear and draws
the noise: seeded by (run seed, round) under ``dp-noise-source`` ``auto``/``seeded`` in a
simulation, fresh OS entropy every round otherwise
(:func:`~fl_app.privacy.randomness.central_noise_generator`; Flower's
``add_gaussian_noise_to_params`` draws from numpy's global generator, which a run can
neither seed nor key from the OS, so it is not used).

Kept apart from Flower's wrapper, for this app's guarantees:

* a malformed update (wrong shapes) is passed on unclipped for the strategy to reject,
  instead of crashing the server in Flower's clipping; a zero update is left as it is;
* a failed client does not cancel the round (Flower's wrapper returns no model then);
  the noise is scaled to the updates actually averaged;
* equal weights: FedAvg weights by example count, which would make one client's share,
  and so the sensitivity, depend on its data size.

Refused at start (:func:`central_dp_errors`): robust rules (the server aggregates clean
individual updates and Krum's output *is* one of them), pre-aggregation, server
learning rates other than 1 and server momentum (the noise is added after the server's
step), ``max-update-norm`` (a data-dependent drop), the omniscient adversary (its rows
are functions of every honest update) and a per-client ``dp-max-epsilon``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.common import FitRes, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import DifferentialPrivacyServerSideFixedClipping, Strategy
from flwr.supercore.differential_privacy import (
    compute_clip_model_update,
    compute_stdv,
    get_norm,
)

from fl_app import keys
from fl_app.errors import ConfigError
from fl_app.privacy.accounting import epsilon_of, new_accountant, noise_for_target_epsilon
from fl_app.privacy.levels import DPLevel, register_dp_level
from fl_app.privacy.levels.client import client_delta
from fl_app.privacy.settings import DPSettings
from strategies.updates import malformed_reason

ACCOUNTANT_STATE = "central-dp-accountant"  # the strategy state's key: rows (sigma, q, steps)


class CentralDPStrategy(DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed clipping around a FedAvg strategy, accounted."""

    def __init__(self, strategy: Strategy, clipping_norm: float, dp: DPSettings,
                 planned_rounds: int,
                 noise_generator: Callable[[int], np.random.Generator]) -> None:
        super().__init__(strategy, dp.noise_multiplier, clipping_norm, num_sampled_clients=1)
        self.dp, self.planned_rounds = dp, planned_rounds
        self.noise_generator = noise_generator  # server round -> the round's generator
        self.accountant = new_accountant(dp.accountant)
        self.delta = 0.0
        self.sample_rate = 1.0

    def __getattr__(self, name: str) -> Any:
        # the app's strategy methods (check_num_clients, ...) stay reachable
        strategy = self.__dict__.get("strategy")
        if strategy is None:
            raise AttributeError(name)
        return getattr(strategy, name)

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list:
        """Flower's (keeps this round's parameters); note m and the sampling rate m / K."""
        instructions = super().configure_fit(server_round, parameters, client_manager)
        available = max(1, client_manager.num_available())
        self.num_sampled_clients = max(1, len(instructions))
        self.sample_rate = min(1.0, len(instructions) / available)
        self.delta = client_delta(self.dp, available)  # the unit is the client: K of them
        if self.dp.target_epsilon is not None:  # the same every round (and after a resume)
            self.noise_multiplier = noise_for_target_epsilon(
                self.dp.target_epsilon, self.delta, self.sample_rate, self.planned_rounds,
                self.dp.accountant)
        return instructions

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Clip the well-formed updates, average them with equal weights, add the noise."""
        clipped, averaged = [], 0
        self.accountant.step(noise_multiplier=self.noise_multiplier,
                             sample_rate=self.sample_rate)
        epsilon = epsilon_of(self.accountant, self.delta)
        for proxy, res in results:
            arrays = parameters_to_ndarrays(res.parameters)
            if malformed_reason(arrays, self.current_round_params) is None and res.num_examples > 0:
                update = [a - g for a, g in zip(arrays, self.current_round_params, strict=True)]
                if get_norm(update) > 0:  # Flower's clipping divides by the norm
                    compute_clip_model_update(arrays, self.current_round_params,
                                              self.clipping_norm)
                metrics = dict(res.metrics)
                if not metrics.get(keys.BYZANTINE):
                    metrics[keys.EPSILON] = epsilon
                res = FitRes(res.status, ndarrays_to_parameters(arrays), 1, metrics)
                averaged += 1
            clipped.append((proxy, res))
        aggregated, metrics = self.strategy.aggregate_fit(server_round, clipped, failures)
        if aggregated is None or averaged == 0:
            return aggregated, metrics
        std = compute_stdv(self.noise_multiplier, self.clipping_norm, averaged)
        generator = self.noise_generator(server_round)
        noised = [a + generator.normal(0.0, std, a.shape).astype(a.dtype, copy=False)
                  for a in parameters_to_ndarrays(aggregated)]
        return ndarrays_to_parameters(noised), metrics

    def get_state(self) -> dict[str, np.ndarray]:
        """The strategy's state plus the accountant's history (for checkpoints)."""
        history = np.array([[s, q, n] for s, q, n in self.accountant.history], dtype=np.float64)
        return {**self.strategy.get_state(), ACCOUNTANT_STATE: history.reshape(-1, 3)}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`get_state`."""
        rest = {k: v for k, v in state.items() if k != ACCOUNTANT_STATE}
        self.strategy.set_state(rest)
        rows = state.get(ACCOUNTANT_STATE, np.zeros((0, 3)))
        self.accountant.history = [(float(s), float(q), int(n)) for s, q, n in rows]


def central_dp_errors(strategy: str, preaggregation: tuple[str, ...], server_learning_rate: float,
                      server_momentum: float, max_update_norm: float, clipping_norm: float,
                      attack: str, attack_knowledge: str,
                      max_epsilon: float) -> list[ConfigError]:
    """What ``dp-level = 'central'`` cannot be combined with, each naming its key."""
    why = ("dp-level='central' needs FedAvg's plain average of clipped updates for its "
           "noise to cover one client")
    errors = []
    if strategy != "fedavg":
        errors.append(ConfigError(
            "strategy", strategy, "'fedavg' with dp-level='central'",
            "Central DP adds noise to the average; with a robust rule the server aggregates "
            "clean individual updates (Krum's output is one of them), so no noise covers "
            "them. Use dp-level='record' or 'client' with robust rules."))
    checks = [("pre-aggregation", preaggregation, bool(preaggregation), "none"),
              ("server-learning-rate", server_learning_rate, server_learning_rate != 1.0, "1.0"),
              ("server-momentum", server_momentum, server_momentum != 0.0, "0.0"),
              ("max-update-norm", max_update_norm, 0 < max_update_norm < clipping_norm,
               "0 or at least dp-clipping-norm (a shorter limit drops clipped updates "
               "depending on the data)"),
              ("dp-max-epsilon", max_epsilon, max_epsilon > 0, "0 (every client has the one "
               "central epsilon: bound it with num-server-rounds or dp-target-epsilon)")]
    errors += [ConfigError(key, value, f"{allowed} with dp-level='central'", why)
               for key, value, bad, allowed in checks if bad]
    if attack != "none" and attack_knowledge == "omniscient":
        errors.append(ConfigError(
            "attack-knowledge", attack_knowledge, "'own' or 'colluders' with dp-level='central'",
            "The omniscient adversary's rows are functions of every honest update, so one "
            "client's data moves several averaged rows and the accounted epsilon would not "
            "hold."))
    return errors


def central_calibration_errors(dp: DPSettings, settings: Any, planned_rounds: int,
                               num_clients: int, sampled: int, sizes: object
                               ) -> list[ConfigError]:
    """Delta against the K clients; a target epsilon for one sampled Gaussian a round.

    The server's mechanism samples ``m`` of ``K`` clients a round: rate ``q = m / K``.
    """
    try:
        delta = client_delta(dp, num_clients)
        if dp.target_epsilon is not None:
            noise_for_target_epsilon(dp.target_epsilon, delta, sampled / num_clients,
                                     planned_rounds, dp.accountant)
    except ConfigError as exc:
        return [exc]
    return []


register_dp_level(DPLevel(
    "central", None, unit="one client's whole dataset",
    protected_from="whoever sees the global model: other clients, the public",
    not_protected_from="the server, which sees every update in the clear and draws the noise",
    robust_rules=False,
    delta_of=lambda dp, num_clients, num_examples: client_delta(dp, num_clients),
    calibration_errors=central_calibration_errors))
