"""The result folder of a run: summary.json, rounds.csv, clients.csv, model.pt, plots.

Under ``flwr run`` the ServerApp runs from Flower's installed copy of the app, in
whatever directory the local SuperLink was first started from, so a relative
default would land somewhere surprising. The default is therefore fixed:
``~/fl-runs/<run-name>`` (``output-dir`` moves it), and the absolute path is
printed when the run starts and when it ends.

Every file is rewritten atomically (written beside, then renamed), so a run
killed at any moment leaves complete files from its last finished round.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fl_app import keys
from fl_app.config import RunConfig
from fl_app.runs import layout
from fl_app.runs.throttle import Throttle

DEFAULT_RUNS_DIR = Path.home() / "fl-runs"
ROUND_COLUMNS = (
    "round", "test_accuracy", "test_loss", "backdoor_accuracy", "train_loss", "num_clients",
    "num_failures",
    "sampled_clients", "byzantine_clients", "selected_clients", "num_selected_byzantine",
    "clipped_clients", "num_clipped_byzantine", "rule_iterations",
    "rejected_clients", "failed_clients", "abstained_clients", "epsilon_max", "epsilon_mean",
    "kept_global", "note", "seconds",
)
CLIENT_COLUMNS = ("round", "node", "partition", "examples", "train_loss", "epsilon",
                  "noise_source", "byzantine", "trained", "status")
SCORE_COLUMNS = ("round", "partition", "score", "selected")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _csv_bytes(columns: Iterable[str], rows: Iterable[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def _ids(values: Iterable[Any]) -> str:
    """Join ids for one CSV cell: ``3;17;42`` (empty when there are none)."""
    return ";".join(str(v) for v in values)


def versions() -> dict[str, str]:
    """Versions of Python and of the packages a result depends on."""
    out = {"python": platform.python_version()}
    for pkg in ("flwr", "torch", "opacus", "numpy", "flwr-datasets"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def resolve_run_dir(cfg: RunConfig) -> Path:
    """Return the absolute folder this run writes to (created).

    Never an existing run's folder (a suffix ``-2``, ``-3`` ... keeps it apart),
    except with ``resume = true``, which continues the run in ``run-name``.
    """
    base = Path(cfg.output_dir).expanduser() if cfg.output_dir else DEFAULT_RUNS_DIR
    name = cfg.run_name or (f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.dataset}-{cfg.strategy}"
                            f"-{cfg.attack}")
    run_dir = (base / name).resolve()
    if cfg.resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    suffix = 1
    while run_dir.exists() and any(run_dir.iterdir()):
        suffix += 1
        run_dir = (base / f"{name}-{suffix}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


class RunRecorder:
    """Collects what each round did and keeps the result folder up to date."""

    def __init__(self, cfg: RunConfig, run_dir: Path, extra: dict[str, Any] | None = None,
                 on_round: Callable[[dict[str, Any]], None] | None = None):
        self.cfg = cfg
        self.on_round = on_round  # e.g. a progress display, called with each rounds.csv row
        self.run_dir = run_dir
        self.rounds: list[dict[str, Any]] = []
        self.clients: list[dict[str, Any]] = []
        self.scores: list[dict[str, Any]] = []
        self.extra = dict(extra or {})
        # Node id -> partition id, filled in by the sampler: rows name partitions, which
        # are the same in every run (simulated node ids are random).
        self.partition_of: Mapping[str, int] = {}
        # Partition -> the DP accountant it reported last (see fl_app.runs.checkpoint)
        self.dp_accountants: dict[str, str] = {}
        self._fit: Any = None  # the last strategies.fedavg.FitRoundReport
        self.tracker: Any = None  # fl_app.runs.trackers, opened with the first row
        self._started = time.time()
        self._last = self._started
        # the figure is redrawn at most every 30 s (and at the end), not after every round
        self._plot = Throttle(self.plot_accuracy)
        self.write_summary(status="running")

    def get_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the recorder (JSON-serialisable)."""
        return {"rounds": self.rounds, "clients": self.clients, "scores": self.scores,
                "extra": self.extra, "dp_accountants": self.dp_accountants,
                "seconds": round(time.time() - self._started, 3)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint's :meth:`get_state`; rewrite the files to match it.

        Rows written after the checkpoint (a round killed between its evaluation
        and its checkpoint) are dropped: that round runs again.
        """
        self.rounds, self.clients = list(state["rounds"]), list(state["clients"])
        self.scores, self.dp_accountants = list(state["scores"]), dict(state["dp_accountants"])
        self.extra.update(state["extra"])
        self._started = time.time() - float(state["seconds"])
        self._last = time.time()
        self._flush()

    def label(self, node_id: str) -> str:
        """How rows name a client: its partition id when known, else its node id."""
        return str(self.partition_of.get(node_id, node_id))

    def note_federation(self, num_nodes: int, simulated: bool,
                        byzantine: list[int] | str, dp_noise_source: str = "") -> None:
        """Record the federation the run found at start (in summary.json).

        ``dp_noise_source`` is where the honest clients' DP randomness comes from
        (``seeded``, ``os``, ``csprng``; empty without DP).
        """
        self.extra.update({"num_nodes": num_nodes, "simulation": simulated,
                           "byzantine_partitions": byzantine,
                           "dp_noise_source": dp_noise_source})
        self.write_summary(status="running")

    # -- called by the strategy after aggregation, then by central evaluation
    def on_fit_round(self, report: Any) -> None:
        """Keep the training round's report until its evaluation arrives.

        The DP accountants it carries are taken now, not with the row: the next
        round's fit instructions (sent while this round is evaluated) hand them back.
        """
        self._fit = report
        for cid, m in getattr(report, "received", {}).items():
            if isinstance(m.get(keys.DP_ACCOUNTANT_STATE), str):
                self.dp_accountants[self.label(cid)] = m[keys.DP_ACCOUNTANT_STATE]

    def on_evaluate(self, server_round: int, loss: float, accuracy: float,
                    weights: list[np.ndarray], backdoor_accuracy: float | None = None) -> None:
        """Write the row of ``server_round`` (0: the initial model) and the model."""
        now = time.time()
        row: dict[str, Any] = {"round": server_round, "test_accuracy": round(accuracy, 6),
                               "test_loss": round(loss, 6), "seconds": round(now - self._last, 3),
                               "backdoor_accuracy": "" if backdoor_accuracy is None
                               else round(backdoor_accuracy, 6)}
        self._last = now
        fit = self._fit if (self._fit and self._fit.server_round == server_round) else None
        row.update(self._fit_columns(fit))
        self.rounds.append(row)
        self._save_tensors(weights)
        self._track(row)
        self._flush()
        if self.on_round is not None:
            self.on_round(row)

    def _track(self, row: dict[str, Any]) -> None:
        """Hand the row (and the round's client rows) to the run's tracker, if any."""
        if self.cfg.tracker == "none":
            return
        if self.tracker is None:
            from fl_app.runs.trackers import open_tracker

            log_dir = Path(self.cfg.tracker_dir).expanduser() if self.cfg.tracker_dir \
                else self.run_dir
            self.tracker = open_tracker(self.cfg.tracker, self.cfg.as_dict(), log_dir,
                                        self.cfg.tracker_experiment or self.run_dir.name,
                                        self.run_dir.name)
        self.tracker.log_round(row, [c for c in self.clients if c["round"] == row["round"]])
        if row["round"] >= self.cfg.num_server_rounds:
            self._close_tracker("finished")

    def _close_tracker(self, status: str) -> None:
        if self.tracker is not None:
            tracker, self.tracker = self.tracker, None
            tracker.close(status)

    def _fit_columns(self, fit: Any) -> dict[str, Any]:
        if fit is None:
            return {"num_clients": 0, "num_failures": 0, "kept_global": False}
        metrics = fit.client_metrics
        parts = [m.get(keys.PARTITION_ID, "?") for m in metrics]
        byz_rows = {i for i, m in enumerate(metrics) if m.get(keys.BYZANTINE)} | set(fit.corrupted)
        honest_losses = [float(m[keys.TRAIN_LOSS]) for i, m in enumerate(metrics)
                         if i not in byz_rows and keys.TRAIN_LOSS in m and m.get(keys.TRAINED, 1)]
        eps = [float(m[keys.EPSILON]) for m in metrics if float(m.get(keys.EPSILON, -1)) >= 0]
        for i, m in enumerate(metrics):
            self.clients.append({
                "round": fit.server_round, "node": fit.client_ids[i], "partition": parts[i],
                "examples": fit.num_examples[i], "train_loss": m.get(keys.TRAIN_LOSS, ""),
                "epsilon": m.get(keys.EPSILON, ""),
                "noise_source": m.get(keys.DP_NOISE_SOURCE, ""), "byzantine": int(i in byz_rows),
                "trained": m.get(keys.TRAINED, 1), "status": m.get(keys.STATUS, "")})
        for cid, m in fit.abstained:
            self.clients.append({
                "round": fit.server_round, "node": cid, "partition": m.get(keys.PARTITION_ID, "?"),
                "examples": 0, "train_loss": "", "epsilon": m.get(keys.EPSILON, ""),
                "noise_source": "",
                "byzantine": int(bool(m.get(keys.BYZANTINE))), "trained": 0,
                "status": m.get(keys.STATUS, "")})
        if fit.scores is not None:
            chosen = set(fit.selected)
            self.scores += [{"round": fit.server_round, "partition": parts[i], "score": s,
                             "selected": int(i in chosen)} for i, s in enumerate(fit.scores)]
        return {
            **_rule_columns(fit, parts, byz_rows),
            "train_loss": round(float(np.mean(honest_losses)), 6) if honest_losses else "",
            "num_clients": len(metrics), "num_failures": fit.num_failures,
            "sampled_clients": _ids(sorted(parts)),
            "byzantine_clients": _ids(sorted(parts[i] for i in byz_rows)),
            "selected_clients": "" if fit.kept_global else _ids(parts[i] for i in fit.selected),
            "num_selected_byzantine": sum(i in byz_rows for i in fit.selected),
            "rejected_clients": _ids(f"{self.label(cid)}:{why}" for cid, why in fit.rejected),
            "failed_clients": _ids(self.label(cid) for cid in sorted(
                getattr(fit, "failed", ()), key=lambda c: (self.partition_of.get(c, -1), c))),
            "abstained_clients": _ids(m.get(keys.PARTITION_ID, cid) for cid, m in fit.abstained),
            "epsilon_max": round(max(eps), 6) if eps else "",
            "epsilon_mean": round(float(np.mean(eps)), 6) if eps else "",
            "kept_global": fit.kept_global, "note": fit.note,
        }

    # -- files
    def _save_tensors(self, weights: list[np.ndarray]) -> None:
        buf = io.BytesIO()
        torch.save([torch.from_numpy(np.asarray(w)) for w in weights], buf)
        atomic_write_bytes(self.run_dir / layout.MODEL, buf.getvalue())

    def _flush(self) -> None:
        atomic_write_bytes(self.run_dir / layout.ROUNDS, _csv_bytes(ROUND_COLUMNS, self.rounds))
        atomic_write_bytes(self.run_dir / layout.CLIENTS, _csv_bytes(CLIENT_COLUMNS, self.clients))
        if self.scores:
            atomic_write_bytes(self.run_dir / layout.KRUM_SCORES,
                               _csv_bytes(SCORE_COLUMNS, self.scores))
        done = bool(self.rounds) and self.rounds[-1]["round"] >= self.cfg.num_server_rounds
        self._plot(force=done)
        self.write_summary(status="finished" if done else "running")
        if done:
            print(f"[fl_app] run finished; results in {self.run_dir}", flush=True)

    def final_metrics(self) -> dict[str, Any]:
        """Final and best test accuracy, and the last round's loss."""
        if not self.rounds:
            return {}
        accs = [r["test_accuracy"] for r in self.rounds]
        return {"final_test_accuracy": accs[-1], "best_test_accuracy": max(accs),
                "final_test_loss": self.rounds[-1]["test_loss"],
                "rounds_completed": self.rounds[-1]["round"]}

    def fail(self, error: BaseException) -> None:
        """Record that the run stopped on ``error``: summary.json says so, and the log.

        ``failed`` for an error, ``interrupted`` for a stop (Ctrl-C, a signal); the
        files of the rounds done so far stay as they are.
        """
        status = "failed" if isinstance(error, Exception) else "interrupted"
        self.extra["error"] = f"{type(error).__name__}: {error}"
        self.write_summary(status=status)
        try:
            if self.rounds:
                self._plot(force=True)  # the figure of every round done
        except Exception as exc:  # the run's own error is the one to report
            print(f"[fl_app] could not draw {layout.ACCURACY_PLOT}: {exc}", flush=True)
        try:
            self._close_tracker(status)
        except Exception as exc:  # the run's own error is the one to report
            print(f"[fl_app] could not close the tracker: {exc}", flush=True)
        print(f"[fl_app] run {status.upper()}: {self.extra['error']}; results so far in "
              f"{self.run_dir}", flush=True)

    def write_summary(self, status: str) -> None:
        """(Re)write summary.json: config, final metrics, versions, seconds, status."""
        summary = {"status": status, "run_dir": str(self.run_dir),
                   "config": self.cfg.as_dict(), **self.extra,
                   "byzantine_partitions_seen": sorted(
                       {str(c["partition"]) for c in self.clients if c["byzantine"]}),
                   # what the DP clients reported using: the clients decide, not the server
                   "dp_noise_sources_seen": sorted(
                       {c["noise_source"] for c in self.clients if c.get("noise_source")}),
                   "final": self.final_metrics(),
                   "seconds": round(time.time() - self._started, 3), "versions": versions()}
        atomic_write_bytes(self.run_dir / layout.SUMMARY,
                           json.dumps(summary, indent=2, default=str).encode())

    def plot_accuracy(self) -> None:
        """Write accuracy.png: test accuracy per round."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["round"] for r in self.rounds], [r["test_accuracy"] for r in self.rounds],
                marker="o", markersize=3)
        ax.set(xlabel="round", ylabel="test accuracy", ylim=(0, 1),
               title=f"{self.cfg.dataset}, {self.cfg.strategy}, attack={self.cfg.attack}")
        ax.grid(alpha=0.3)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        atomic_write_bytes(self.run_dir / layout.ACCURACY_PLOT, buf.getvalue())


def _rule_columns(fit: Any, parts: list[Any], byz_rows: set[int]) -> dict[str, Any]:
    """What the rule did beyond selecting: the clients it clipped, its iterations."""
    clipped = [] if fit.kept_global else list(getattr(fit, "clipped", []))
    iterations = getattr(fit, "iterations", None)
    return {"clipped_clients": _ids(parts[i] for i in clipped),
            "num_clipped_byzantine": sum(i in byz_rows for i in clipped),
            "rule_iterations": "" if iterations is None or fit.kept_global else iterations}
