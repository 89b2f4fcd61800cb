"""Flower's legacy round loop, able to start after a checkpointed round.

``flwr.server.Server.fit`` always starts from the initial parameters at round 1.
:class:`ResumableServer` runs the same loop (fit round, central evaluation,
federated evaluation, in Flower's order) but can start at ``round k + 1`` from a
checkpoint's weights, and calls ``on_round_end`` after every round (and after
the initial evaluation, round 0), which the app uses to write the checkpoint.

Central evaluation of round ``r`` runs in a background thread while the clients
train round ``r + 1`` (in a simulation the client actors would otherwise idle
through it, and on real devices the server's evaluation no longer delays them).
The order of everything recorded stays the sequential loop's:

* round ``r + 1`` aggregates (and records its report) only once the evaluation
  and ``on_round_end`` of round ``r`` are done;
* ``on_round_end`` of round ``r`` gets ``round_state()`` as it was at the end of
  round ``r`` (after its federated evaluation, before round ``r + 1`` samples),
  so a checkpoint holds the state the next round starts from;
* a run that fails or stops waits for the evaluation in flight first, so the
  last finished round keeps its row and its checkpoint.
"""

from __future__ import annotations

import logging
import timeit
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from flwr.common import NDArrays, Parameters, Scalar, ndarrays_to_parameters
from flwr.server import History, Server
from flwr.server.client_manager import ClientManager
from flwr.server.server import FitResultsAndFailures, fit_clients
from flwr.server.strategy import Strategy

from fl_app.errors import FLAppError

log = logging.getLogger(__name__)


class RoundAbandonedError(FLAppError, RuntimeError):
    """The loop stopped before this round's end state was known: no checkpoint for it."""


class ResumableServer(Server):
    """A Flower ``Server`` that can continue after round ``start_after``.

    Args:
        client_manager: Flower's client manager (the app's seeded sampler).
        strategy: The strategy.
        start_after: The last round already done; ``None`` for a new run (the
            initial parameters are evaluated as round 0).
        start_weights: The global model after ``start_after`` (required with it).
        on_round_end: Called with ``(round, parameters, round_state())`` once a round
            is complete and evaluated (in the evaluation thread).
        round_state: What ``on_round_end`` needs of the moment the round ended (the
            sampler's state), taken in the loop's thread before the next round starts.
        before_first_round: Called with the client manager once, before the first round
            to run (the federation checks: a run that cannot go on stops here).
        on_failure: Called with the exception that ends the loop, before it propagates
            (Flower's ``flwr run --stream`` exits 0 even then: the app says it itself).
    """

    def __init__(self, *, client_manager: ClientManager, strategy: Strategy,
                 start_after: int | None = None, start_weights: NDArrays | None = None,
                 on_round_end: Callable[[int, Parameters, Any], None] | None = None,
                 round_state: Callable[[], Any] | None = None,
                 before_first_round: Callable[[ClientManager], None] | None = None,
                 on_failure: Callable[[BaseException], None] | None = None) -> None:
        super().__init__(client_manager=client_manager, strategy=strategy)
        if (start_after is None) != (start_weights is None):
            raise ValueError("start_after and start_weights go together")
        self.start_after = start_after
        self.start_weights = start_weights
        self.on_round_end = on_round_end or (lambda server_round, parameters, state: None)
        self.round_state = round_state or (lambda: None)
        self.before_first_round = before_first_round or (lambda client_manager: None)
        self.on_failure = on_failure or (lambda error: None)
        self._evaluator: ThreadPoolExecutor | None = None
        self._pending: Future | None = None  # the evaluation and end of the last round
        self._pending_state: Future | None = None  # its round_state(), once known

    def fit(self, num_rounds: int, timeout: float | None) -> tuple[History, float]:
        """Run rounds ``start_after + 1 .. num_rounds`` (all of them for a new run)."""
        try:
            with ThreadPoolExecutor(max_workers=1,
                                    thread_name_prefix="central-evaluation") as evaluator:
                self._evaluator = evaluator
                try:
                    return self._fit(num_rounds, timeout)  # it waits for the last round
                except BaseException:
                    self._settle()
                    raise
        except BaseException as error:
            self.on_failure(error)
            raise

    def _fit(self, num_rounds: int, timeout: float | None) -> tuple[History, float]:
        history = History()
        if self.start_after is None:
            self.parameters = self._get_initial_parameters(server_round=0, timeout=timeout)
            self._evaluate_centrally(0, self.parameters, history)
            self.on_round_end(0, self.parameters, self.round_state())
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
            self._end_round_in_background(server_round, self.parameters, history)
            res_fed = self.evaluate_round(server_round=server_round, timeout=timeout)
            if res_fed is not None and res_fed[0] is not None:
                history.add_loss_distributed(server_round=server_round, loss=res_fed[0])
                history.add_metrics_distributed(server_round=server_round, metrics=res_fed[1])
            self._pending_state.set_result(self.round_state())
        self._wait_for_round_end()
        return history, timeit.default_timer() - start_time

    def fit_round(self, server_round: int, timeout: float | None
                  ) -> tuple[Parameters | None, dict[str, Scalar], FitResultsAndFailures] | None:
        """Flower's fit round, the previous round's end awaited between training and aggregation."""
        instructions = self.strategy.configure_fit(
            server_round=server_round, parameters=self.parameters,
            client_manager=self._client_manager)
        if not instructions:  # the previous round's end is awaited before this one's
            log.info("configure_fit: no clients selected, cancel")
            return None
        results, failures = fit_clients(client_instructions=instructions,
                                        max_workers=self.max_workers, timeout=timeout,
                                        group_id=server_round)
        # The previous round was evaluated while these clients trained; its row and
        # checkpoint come first, then this round's aggregation and report.
        self._wait_for_round_end()
        parameters, metrics = self.strategy.aggregate_fit(server_round, results, failures)
        return parameters, metrics, (results, failures)

    def _end_round_in_background(self, server_round: int, parameters: Parameters,
                                 history: History) -> None:
        """Evaluate ``server_round`` centrally and end it, in the evaluation thread."""
        self._wait_for_round_end()  # at most one round in flight (none is, normally)
        state: Future = Future()

        def end_round() -> None:
            self._evaluate_centrally(server_round, parameters, history)
            self.on_round_end(server_round, parameters, state.result())

        self._pending_state = state
        self._pending = self._evaluator.submit(end_round)

    def _wait_for_round_end(self) -> None:
        """Block until the round in flight is evaluated and ended (its error raised here)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _settle(self) -> None:
        """On the way out of a failing loop: abandon a round not ended, let its evaluation finish.

        A round whose federated evaluation failed has no end state: its row is
        written, its checkpoint is not (a resumed run does that round again). An
        error of the evaluation itself is logged: the loop's own error is the one raised.
        """
        state = self._pending_state
        if state is not None and not state.done():
            state.set_exception(RoundAbandonedError("the loop stopped before this round ended"))
        pending, self._pending = self._pending, None
        error = None if pending is None else pending.exception()
        if error is not None and not isinstance(error, RoundAbandonedError):
            log.error("central evaluation failed too: %s", error)

    def _evaluate_centrally(self, server_round: int, parameters: Parameters,
                            history: History) -> None:
        res = self.strategy.evaluate(server_round, parameters=parameters)
        if res is not None:
            history.add_loss_centralized(server_round=server_round, loss=res[0])
            history.add_metrics_centralized(server_round=server_round, metrics=res[1])
