"""The round loop: central evaluation overlaps the next round's training, in order."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from flwr.common import (
    Code,
    EvaluateRes,
    FitIns,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from fl_app.federation.server_loop import ResumableServer

TRAIN_S = EVAL_S = 0.4


class SlowClient(ClientProxy):
    """Trains for ``TRAIN_S`` and returns the global model plus one."""

    def fit(self, ins, timeout, group_id):
        time.sleep(TRAIN_S)
        (w,) = parameters_to_ndarrays(ins.parameters)
        return FitRes(Status(Code.OK, ""), ndarrays_to_parameters([w + 1]), 1, {})

    def get_properties(self, ins, timeout, group_id):
        raise NotImplementedError

    def get_parameters(self, ins, timeout, group_id):
        raise NotImplementedError

    def evaluate(self, ins, timeout, group_id):
        return EvaluateRes(Status(Code.OK, ""), 0.0, 1, {})

    def reconnect(self, ins, timeout, group_id):
        raise NotImplementedError


class Journal(Strategy):
    """A strategy that notes, with the time, what the loop asks of it and when."""

    def __init__(self, fail_configure_at: int | None = None, fail_evaluate_at: int | None = None):
        self.events: list[tuple[str, int, float]] = []
        self.fail_configure_at, self.fail_evaluate_at = fail_configure_at, fail_evaluate_at
        self.aggregated = 0  # rounds aggregated so far: the strategy's state

    def note(self, what, server_round):
        self.events.append((what, server_round, time.monotonic()))

    def initialize_parameters(self, client_manager):
        return ndarrays_to_parameters([np.zeros(1)])

    def configure_fit(self, server_round, parameters, client_manager):
        if server_round == self.fail_configure_at:
            raise RuntimeError(f"round {server_round} cannot start")
        self.note("fit starts", server_round)
        return [(client, FitIns(parameters, {})) for client in client_manager.all().values()]

    def aggregate_fit(self, server_round, results, failures):
        self.note("aggregate", server_round)
        self.aggregated = server_round
        return results[0][1].parameters, {}

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        self.note("evaluate starts", server_round)
        time.sleep(EVAL_S if server_round else 0)
        if server_round == self.fail_evaluate_at:
            raise ValueError(f"evaluation of round {server_round} failed")
        (w,) = parameters_to_ndarrays(parameters)
        self.note("evaluated", server_round)
        return float(w[0]), {}


def run_loop(strategy: Journal, num_rounds: int = 3):
    """Run the loop on two slow clients; what on_round_end got, and the failure if any."""
    manager = SimpleClientManager()
    for cid in ("a", "b"):
        manager.register(SlowClient(cid))
    ended, failures = [], []

    def on_round_end(server_round, parameters, state):
        ended.append((server_round, float(parameters_to_ndarrays(parameters)[0][0]), state,
                      threading.current_thread().name))
        strategy.note("ended", server_round)

    server = ResumableServer(client_manager=manager, strategy=strategy,
                             on_round_end=on_round_end,
                             round_state=lambda: strategy.aggregated,
                             on_failure=failures.append)
    history = None
    try:
        history, _ = server.fit(num_rounds, timeout=None)
    except Exception as error:  # the test looks at it
        assert failures == [error]
        return ended, history, error
    assert failures == []
    return ended, history, None


def when(strategy, what, server_round):
    (t,) = [t for w, r, t in strategy.events if (w, r) == (what, server_round)]
    return t


def test_each_round_is_evaluated_while_the_next_one_trains_and_ends_in_order():
    strategy = Journal()
    ended, history, error = run_loop(strategy)
    assert error is None
    # every round ended once, in order, with its own model and the state it ended with
    assert [(r, w, s) for r, w, s, _ in ended] == [(0, 0.0, 0), (1, 1.0, 1), (2, 2.0, 2),
                                                   (3, 3.0, 3)]
    assert all(name.startswith("central-evaluation") for *_, name in ended[1:])
    assert [loss for _, loss in history.losses_centralized] == [0.0, 1.0, 2.0, 3.0]
    for r in (1, 2):
        # round r's evaluation ran while round r + 1's clients trained ...
        assert when(strategy, "fit starts", r + 1) < when(strategy, "evaluated", r)
        assert when(strategy, "evaluated", r) < when(strategy, "aggregate", r + 1)
        # ... and round r ended before round r + 1 aggregated (rows stay in order)
        assert when(strategy, "ended", r) < when(strategy, "aggregate", r + 1)


def test_a_round_that_fails_to_start_leaves_the_round_before_ended():
    strategy = Journal(fail_configure_at=3)
    ended, _, error = run_loop(strategy)
    assert isinstance(error, RuntimeError) and "round 3 cannot start" in str(error)
    assert [r for r, *_ in ended] == [0, 1, 2]  # round 2's row and checkpoint are there


def test_a_failed_evaluation_stops_the_run_with_its_error():
    strategy = Journal(fail_evaluate_at=2)
    ended, _, error = run_loop(strategy)
    assert isinstance(error, ValueError) and "evaluation of round 2 failed" in str(error)
    assert [r for r, *_ in ended] == [0, 1]
    assert ("aggregate", 3) not in [(w, r) for w, r, _ in strategy.events]


def test_the_last_rounds_evaluation_failing_is_not_lost():
    ended, _, error = run_loop(Journal(fail_evaluate_at=3))
    assert isinstance(error, ValueError)
    assert [r for r, *_ in ended] == [0, 1, 2]


@pytest.mark.parametrize("start_after", [1, 3])
def test_a_resumed_loop_starts_after_its_round(start_after):
    strategy = Journal()
    manager = SimpleClientManager()
    manager.register(SlowClient("a"))
    ended = []
    server = ResumableServer(client_manager=manager, strategy=strategy,
                             start_after=start_after, start_weights=[np.full(1, 10.0)],
                             on_round_end=lambda r, p, s: ended.append(r))
    server.fit(3, timeout=None)
    assert ended == list(range(start_after + 1, 4))
