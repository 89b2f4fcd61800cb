"""A run that cannot make progress stops: rounds that changed nothing because clients failed.

A round *stalls* when it kept the global model and had failures (every result failed,
more failures than ``accept-failures`` allowed, or too few usable results left for the
aggregator). After ``max-failed-rounds`` stalled rounds in a row the run stops with
:class:`RunStalledError`, which names the rounds and the clients' first distinct error
messages. It is raised as soon as the last of those rounds is aggregated, before its
evaluation: the ServerApp fails (``summary.json`` says ``failed``, with the error and
``client_errors``; :func:`fl_app.experiments.simulate.simulate` raises; ``flwr run``
shows it in the run's log), and the checkpoint of the round before stays, so that the
run resumes (``resume = true``) at the round that stopped it once the cause is fixed.
``max-failed-rounds = 0`` never stops.
"""

from __future__ import annotations

from typing import Any

from fl_app.errors import FLAppError

KEY_MAX_FAILED_ROUNDS = "max-failed-rounds"
MAX_ERRORS_KEPT = 5  # distinct client error messages reported


class RunStalledError(FLAppError, RuntimeError):
    """Consecutive rounds kept the global model because clients failed."""


class ProgressGuard:
    """Counts stalled rounds in a row; :meth:`check` stops the run at the limit."""

    def __init__(self, max_failed_rounds: int) -> None:
        self.max_failed_rounds = max_failed_rounds
        self.stalled: list[int] = []  # the current streak's rounds
        self.errors: list[str] = []  # the streak's distinct client errors
        self.note = ""

    def observe(self, report: Any) -> None:
        """Take a round's :class:`~strategies.fedavg.FitRoundReport`."""
        if not (report.kept_global and report.num_failures > 0):
            self.stalled, self.errors = [], []
            return
        self.stalled.append(report.server_round)
        self.note = report.note
        for message in report.errors:
            if message not in self.errors and len(self.errors) < MAX_ERRORS_KEPT:
                self.errors.append(message)

    def resume_from(self, rows: list[dict[str, Any]], errors: list[str]) -> None:
        """Continue the streak a resumed run had: its trailing stalled ``rounds.csv`` rows.

        A run resumed without fixing its cause then stops at its next stalled round, not
        ``max-failed-rounds`` rounds later; ``errors`` are those its summary kept.
        """
        streak = []
        for row in reversed(rows):
            if not (row.get("kept_global") and int(row.get("num_failures") or 0) > 0):
                break
            streak.insert(0, int(row["round"]))
        self.stalled, self.errors = streak, list(errors) if streak else []

    def check(self) -> None:
        """Raise :class:`RunStalledError` once the streak reaches ``max-failed-rounds``."""
        if not self.max_failed_rounds or len(self.stalled) < self.max_failed_rounds:
            return
        first, last = self.stalled[0], self.stalled[-1]
        errors = "; ".join(self.errors) or "none reported (rejected results only)"
        raise RunStalledError(
            f"no progress in {len(self.stalled)} rounds in a row (rounds {first}-{last}): "
            f"each kept the global model because clients failed ({self.note}). The "
            f"clients' errors: {errors}. Fix the cause and run again with resume=true: it "
            f"continues from the checkpoint after round {last - 1}, at round {last} "
            f"({KEY_MAX_FAILED_ROUNDS} = 0 never stops).")
