"""Flower's legacy round loop, able to start after a checkpointed round.

``flwr.server.Server.fit`` always starts from the initial parameters at round 1.
:class:`ResumableServer` runs the same loop (fit round, central evaluation,
federated evaluation, in Flower's order) but can start at ``round k + 1`` from a
checkpoint's weights, and calls ``on_round_end`` after every round (and after
the initial evaluation, round 0), which the app uses to write the checkpoint.
"""

from __future__ import annotations

import logging
import timeit
from collections.abc import Callable

from flwr.common import NDArrays, Parameters, ndarrays_to_parameters
from flwr.server import History, Server
from flwr.server.client_manager import ClientManager
from flwr.server.strategy import Strategy

log = logging.getLogger(__name__)


class ResumableServer(Server):
    """A Flower ``Server`` that can continue after round ``start_after``.

    Args:
        client_manager: Flower's client manager (the app's seeded sampler).
        strategy: The strategy.
        start_after: The last round already done; ``None`` for a new run (the
            initial parameters are evaluated as round 0).
        start_weights: The global model after ``start_after`` (required with it).
        on_round_end: Called with ``(round, parameters)`` once a round is complete.
        before_first_round: Called with the client manager once, before the first round
            to run (the federation checks: a run that cannot go on stops here).
        on_failure: Called with the exception that ends the loop, before it propagates
            (Flower's ``flwr run --stream`` exits 0 even then: the app says it itself).
    """

    def __init__(self, *, client_manager: ClientManager, strategy: Strategy,
                 start_after: int | None = None, start_weights: NDArrays | None = None,
                 on_round_end: Callable[[int, Parameters], None] | None = None,
                 before_first_round: Callable[[ClientManager], None] | None = None,
                 on_failure: Callable[[BaseException], None] | None = None) -> None:
        super().__init__(client_manager=client_manager, strategy=strategy)
        if (start_after is None) != (start_weights is None):
            raise ValueError("start_after and start_weights go together")
        self.start_after = start_after
        self.start_weights = start_weights
        self.on_round_end = on_round_end or (lambda server_round, parameters: None)
        self.before_first_round = before_first_round or (lambda client_manager: None)
        self.on_failure = on_failure or (lambda error: None)

    def fit(self, num_rounds: int, timeout: float | None) -> tuple[History, float]:
        """Run rounds ``start_after + 1 .. num_rounds`` (all of them for a new run)."""
        try:
            return self._fit(num_rounds, timeout)
        except BaseException as error:
            self.on_failure(error)
            raise

    def _fit(self, num_rounds: int, timeout: float | None) -> tuple[History, float]:
        history = History()
        if self.start_after is None:
            self.parameters = self._get_initial_parameters(server_round=0, timeout=timeout)
            self._evaluate_centrally(0, history)
            self.on_round_end(0, self.parameters)
            first = 1
        else:
            self.parameters = ndarrays_to_parameters(self.start_weights)
            first = self.start_after + 1
            log.info("resuming after round %d of %d", self.start_after, num_rounds)
        if first <= num_rounds:  # a finished run resumed has no round to check for
            self.before_first_round(self.client_manager())
        start_time = timeit.default_timer()
        for server_round in range(first, num_rounds + 1):
            res_fit = self.fit_round(server_round=server_round, timeout=timeout)
            if res_fit is not None:
                parameters, fit_metrics, _ = res_fit
                if parameters:
                    self.parameters = parameters
                history.add_metrics_distributed_fit(server_round=server_round,
                                                    metrics=fit_metrics)
            self._evaluate_centrally(server_round, history)
            res_fed = self.evaluate_round(server_round=server_round, timeout=timeout)
            if res_fed is not None and res_fed[0] is not None:
                history.add_loss_distributed(server_round=server_round, loss=res_fed[0])
                history.add_metrics_distributed(server_round=server_round, metrics=res_fed[1])
            self.on_round_end(server_round, self.parameters)
        return history, timeit.default_timer() - start_time

    def _evaluate_centrally(self, server_round: int, history: History) -> None:
        res = self.strategy.evaluate(server_round, parameters=self.parameters)
        if res is not None:
            history.add_loss_centralized(server_round=server_round, loss=res[0])
            history.add_metrics_centralized(server_round=server_round, metrics=res[1])
