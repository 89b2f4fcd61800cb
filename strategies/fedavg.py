"""FedAvg in update space: the Flower strategy every aggregator of this project shares.

:class:`UpdateSpaceFedAvg` subclasses Flower's ``flwr.server.strategy.FedAvg`` and
changes one thing about the round: results are turned into updates
``d_i = w_i - w`` against the weights ``w`` this round sent, malformed results
are rejected per client, an optional server-side hook may rewrite updates (the
simulation-only omniscient adversary of :mod:`attacks`), and the aggregate is
``w + step``, where ``step`` comes from an
:class:`~strategies.pipeline.AggregationPipeline`: the pre-aggregation steps, the
rule (FedAvg's mean by default; :class:`RuleStrategy` names any registered rule) and
the server optimiser. The rule's size condition (Krum's ``n >= 2f + 3``, ...) is
checked before the round and again after rejections.

Every round ends with a :class:`FitRoundReport` handed to ``on_fit_round``:
which clients answered, which were rejected and why, which abstained (a result
with zero examples, e.g. a client whose DP budget is spent: it is not an update
and is left out of aggregation), which updates the aggregator selected. The
strategy never writes files; the app does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.common import (
    FitIns,
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from strategies.contract import RuleResult
from strategies.pipeline import AggregationPipeline
from strategies.updates import flatten, malformed_reason, stack_updates, unflatten

log = logging.getLogger(__name__)


AggregateResult = RuleResult  # the update to apply, and which rows the rule used


@dataclass
class FitRoundReport:
    """What happened in one training round, in the order of the update rows."""

    server_round: int
    client_ids: list[str] = field(default_factory=list)
    client_metrics: list[dict[str, Scalar]] = field(default_factory=list)
    num_examples: list[int] = field(default_factory=list)
    selected: list[int] = field(default_factory=list)
    scores: list[float] | None = None
    clipped: list[int] = field(default_factory=list)  # rows the rule or a step clipped
    iterations: int | None = None  # iterations an iterative rule used
    corrupted: list[int] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    # Node ids sent work this round that returned no result (an error, a timeout)
    failed: list[str] = field(default_factory=list)
    abstained: list[tuple[str, dict[str, Scalar]]] = field(default_factory=list)
    # The metrics of every result received (accepted, abstained or rejected), by node id
    received: dict[str, dict[str, Scalar]] = field(default_factory=dict)
    num_failures: int = 0
    # Distinct messages of the round's failures (a client's error, a failed status)
    errors: list[str] = field(default_factory=list)
    kept_global: bool = False
    note: str = ""


def failure_messages(failures: list[tuple[ClientProxy, FitRes] | BaseException]) -> list[str]:
    """The distinct messages of a round's failures, in the order they came."""
    messages = []
    for failure in failures:
        if isinstance(failure, BaseException):
            message = f"{type(failure).__name__}: {failure}".strip()
        else:
            message = failure[1].status.message or str(failure[1].status.code)
        if message not in messages:
            messages.append(message)
    return messages


# (server_round, updates, client metrics) -> (updates, rows the hook rewrote)
UpdateHook = Callable[[int, np.ndarray, list[dict[str, Scalar]]], tuple[np.ndarray, list[int]]]


class UpdateSpaceFedAvg(FedAvg):
    """Flower FedAvg that aggregates updates ``w_i - w``, weighted by example count.

    Parameters are those of ``flwr.server.strategy.FedAvg`` plus:

    max_failures:
        Most failures (errors, rejected results) a round tolerates; with more, the
        round keeps the global model. ``None``: any number, as long as enough
        results remain. Flower's ``accept_failures=False`` is ``max_failures=0``.
    max_update_norm:
        Results whose update has a larger L2 norm are rejected as absurd
        (numerical garbage or a crude attack); ``None`` accepts any finite norm.
    result_order:
        Sort key of a round's results (default: the node id); the app sorts by
        partition id, so the same seed gives the same row order in every run.
    update_hook:
        Optional server-side rewrite of the round's updates before aggregation
        (the omniscient adversary in simulations); ``None`` in honest runs.
    on_fit_round:
        Called with the :class:`FitRoundReport` of every round.
    client_config_fn:
        Optional extra fit config per client, ``proxy -> dict`` merged over the
        round's config (the app returns a resumed client's DP accountant).
    pipeline:
        The aggregation (:class:`~strategies.pipeline.AggregationPipeline`); default
        FedAvg's example-weighted mean, no pre-aggregation, server step 1.
    """

    def __init__(self, *, update_hook: UpdateHook | None = None,
                 on_fit_round: Callable[[FitRoundReport], None] | None = None,
                 max_failures: int | None = None, max_update_norm: float | None = None,
                 result_order: Callable[[ClientProxy, FitRes], Any] | None = None,
                 client_config_fn: Callable[[ClientProxy], dict[str, Scalar]] | None = None,
                 pipeline: AggregationPipeline | None = None,
                 **fedavg_kwargs: Any) -> None:
        super().__init__(**fedavg_kwargs)
        self.pipeline = pipeline or AggregationPipeline()
        if max_failures is not None and max_failures < 0:
            raise ValueError(f"max_failures must be >= 0 or None; got {max_failures}")
        if max_update_norm is not None and not max_update_norm > 0:
            raise ValueError(f"max_update_norm must be > 0 or None; got {max_update_norm}")
        # Results arrive in the order clients finish; sorting them makes the
        # aggregate, Krum's ties and the omniscient hook's draw reproducible.
        self.result_order = result_order or (lambda proxy, res: proxy.cid)
        self.max_failures = max_failures
        self.max_update_norm = max_update_norm
        self.update_hook = update_hook
        self.on_fit_round = on_fit_round
        self.client_config_fn = client_config_fn
        self._global: NDArrays | None = None
        self._sent: list[str] = []  # node ids of this round's fit instructions

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_failures={self.max_failures})"


    # ------------------------------------------------------------------ aggregator
    def min_results(self) -> int:
        """Fewest accepted results a round can aggregate (FedAvg: one, Krum: 2f + 3)."""
        return self.pipeline.min_clients()

    def check_num_clients(self, num_clients: int) -> None:
        """Raise (a ``ValueError``) if a round of ``num_clients`` results cannot be aggregated."""
        self.pipeline.check_size(num_clients)

    def aggregate_updates(self, updates: np.ndarray, num_examples: list[int],
                          server_round: int = 0) -> AggregateResult:
        """The step for the ``(n, d)`` updates (:meth:`AggregationPipeline.aggregate`)."""
        return self.pipeline.aggregate(updates, num_examples, server_round)

    def get_state(self) -> dict[str, np.ndarray]:
        """The state carried across rounds (a centre, a momentum buffer), for checkpoints."""
        return {key: np.array(value, copy=True) for key, value in self.pipeline.state.items()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`get_state` returned (a resumed run)."""
        self.pipeline.state = {key: np.asarray(value) for key, value in state.items()}

    # ------------------------------------------------------------------ Flower API
    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        """Remember the weights sent this round, refuse a round size that cannot work."""
        self._global = parameters_to_ndarrays(parameters)
        sample_size, _ = self.num_fit_clients(client_manager.num_available())
        self.check_num_clients(sample_size)
        instructions = super().configure_fit(server_round, parameters, client_manager)
        self._sent = [proxy.cid for proxy, _ in instructions]
        if self.client_config_fn is None:
            return instructions
        return [(proxy, FitIns(ins.parameters, {**ins.config, **self.client_config_fn(proxy)}))
                for proxy, ins in instructions]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Reject malformed results, aggregate the rest in update space."""
        if self._global is None:
            raise RuntimeError("aggregate_fit called before configure_fit")
        report = FitRoundReport(server_round, num_failures=len(failures),
                                errors=failure_messages(failures))
        # Flower hands over a raised error without its client: name those by elimination
        answered = {proxy.cid for proxy, _ in results}
        report.failed = [cid for cid in self._sent if cid not in answered]
        accepted = self._screen_results(server_round, results, report)
        updates = self._drop_absurd_norms(server_round, report,
                                          stack_updates(accepted, self._global))
        report.num_failures += len(report.rejected)
        problem = self._why_not_aggregate(report, len(updates))
        if problem:
            return self._keep_global(report, problem)
        if self.update_hook is not None:
            updates, report.corrupted = self.update_hook(server_round, updates,
                                                         report.client_metrics)
        try:
            result = self.aggregate_updates(updates, report.num_examples, server_round)
            with np.errstate(over="ignore", invalid="ignore"):
                new_weights = unflatten(flatten(self._global) + result.update, self._global)
        except (ValueError, FloatingPointError, OverflowError) as exc:
            return self._keep_global(report, f"aggregation failed: {exc}")
        if not all(np.all(np.isfinite(w)) for w in new_weights):
            # never let a non-finite value into the model
            return self._keep_global(report, "the aggregate is not finite (overflow)")
        report.selected = list(range(len(updates))) if result.selected is None else result.selected
        report.scores, report.iterations = result.scores, result.iterations
        report.clipped = result.clipped or []
        self._finish(report)
        return ndarrays_to_parameters(new_weights), {}

    def _screen_results(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                        report: FitRoundReport) -> list[NDArrays]:
        """The well-formed results that trained, in ``result_order``; the rest go to ``report``."""
        accepted: list[NDArrays] = []
        for proxy, res in sorted(results, key=lambda r: self.result_order(*r)):
            report.received[proxy.cid] = dict(res.metrics)
            arrays = parameters_to_ndarrays(res.parameters)
            reason = malformed_reason(arrays, self._global)
            if reason is None and res.num_examples < 0:
                reason = f"negative example count {res.num_examples}"
            if reason:
                log.warning("round %d: rejected client %s: %s", server_round, proxy.cid, reason)
                report.rejected.append((proxy.cid, reason))
                continue
            if res.num_examples == 0:  # trained on nothing (e.g. its DP budget is spent)
                report.abstained.append((proxy.cid, dict(res.metrics)))
                continue
            accepted.append(arrays)
            report.client_ids.append(proxy.cid)
            report.client_metrics.append(dict(res.metrics))
            report.num_examples.append(int(res.num_examples))
        return accepted

    def _keep_global(self, report: FitRoundReport, problem: str
                     ) -> tuple[Parameters, dict[str, Scalar]]:
        """End the round without changing the model, saying why."""
        log.warning("round %d: keeping the global model: %s", report.server_round, problem)
        report.kept_global, report.note = True, problem
        self._finish(report)
        return ndarrays_to_parameters(self._global), {}

    def _drop_absurd_norms(self, server_round: int, report: FitRoundReport,
                           updates: np.ndarray) -> np.ndarray:
        """Move results whose update norm exceeds ``max_update_norm`` to the rejected."""
        if self.max_update_norm is None or len(updates) == 0:
            return updates
        norms = np.linalg.norm(updates, axis=1)
        keep = norms <= self.max_update_norm
        for i in np.flatnonzero(~keep):
            reason = f"update norm {norms[i]:.3g} > max-update-norm {self.max_update_norm:g}"
            log.warning("round %d: rejected client %s: %s", server_round,
                        report.client_ids[i], reason)
            report.rejected.append((report.client_ids[i], reason))
        report.client_ids = [c for c, k in zip(report.client_ids, keep, strict=True) if k]
        report.client_metrics = [m for m, k in zip(report.client_metrics, keep, strict=True)
                                 if k]
        report.num_examples = [n for n, k in zip(report.num_examples, keep, strict=True) if k]
        return updates[keep]

    def _why_not_aggregate(self, report: FitRoundReport, num_accepted: int) -> str:
        if self.max_failures is not None and report.num_failures > self.max_failures:
            return (f"{report.num_failures} failure(s), more than the {self.max_failures} "
                    "accept-failures allows")
        if report.num_failures and not self.accept_failures:
            return f"{report.num_failures} failure(s) and accept_failures is off"
        try:
            self.check_num_clients(num_accepted)
        except ValueError as exc:
            return f"{num_accepted} usable result(s): {exc}"
        if sum(report.num_examples) <= 0:
            return "no client reported any training examples"
        return ""

    def _finish(self, report: FitRoundReport) -> None:
        if self.on_fit_round is not None:
            self.on_fit_round(report)


class RuleStrategy(UpdateSpaceFedAvg):
    """:class:`UpdateSpaceFedAvg` aggregating with a registered rule (``median``, ...).

    ``rule`` names a rule of :mod:`strategies.rules`; ``params`` its declared parameters
    by keyword; ``preaggregation``, ``server_learning_rate``, ``server_momentum`` and
    ``seed`` (for randomized pre-aggregation) go to the pipeline.
    """

    def __init__(self, rule: str, *, num_byzantine: int = 0,
                 params: dict[str, Any] | None = None,
                 preaggregation: tuple[tuple[str, dict[str, Any]], ...] = (),
                 server_learning_rate: float = 1.0, server_momentum: float = 0.0,
                 seed: int = 0, **kwargs: Any) -> None:
        if num_byzantine < 0:
            raise ValueError(f"num_byzantine must be >= 0; got f={num_byzantine}")
        super().__init__(pipeline=AggregationPipeline(
            rule, num_byzantine, dict(params or {}), preaggregation, server_learning_rate,
            server_momentum, seed), **kwargs)
        self.num_byzantine = num_byzantine

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline.rule!r}, f={self.num_byzantine})"
