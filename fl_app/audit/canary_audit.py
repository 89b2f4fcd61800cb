"""``fl-audit canaries``: the one-run audit of a federation as configured.

The run is the user's (any strategy, attack, DP level) with ``audit-canaries = m``
(:mod:`fl_app.audit.canaries`). After it, every canary is scored by minus the final
global model's loss on its wrong label, the ``k`` highest are guessed *in* and the ``k``
lowest *out* for each ``k`` tried, and :func:`fl_app.audit.one_run.audit_bound` turns
the guesses into an epsilon lower bound at 95% confidence.

``epsilon_accounted`` is the largest epsilon reported by a client that trained on a
canary (clients.csv, its last round), ``delta`` the largest of their deltas: the
guarantee every canary has. Without DP, nothing is accounted (``null``) and the bound
is taken at ``dp-delta`` or 1e-5. The theorem adds ``2 m delta`` to the p-value: with
the record-level default ``1 / (10 N)`` for small clients that term alone can exceed
5%, and the audit can then show nothing; give ``dp-delta`` (e.g. 1e-5) to audit.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fl_app.audit.canaries import canary_scores, run_canaries
from fl_app.audit.one_run import audit_bound
from fl_app.audit.reconstruction_audit import load_final_model
from fl_app.learning.data import partition_indices
from fl_app.privacy.levels import DP_LEVELS
from fl_app.runs import layout

AUDIT_FILE = "audit.json"
FIGURE_FILE = "canary_scores.png"
CONFIDENCE = 0.95
NO_DP_DELTA = 1e-5  # Steinke et al.'s choice; the bound adds 2 m delta to its p-value


def guess_counts(m: int) -> list[int]:
    """The ``k`` tried (guesses in and out each): 1%, 2%, 5%, 10% and 25% of ``m``, at least 1."""
    return sorted({max(1, round(f * m)) for f in (0.01, 0.02, 0.05, 0.1, 0.25)})


def canary_audit(run_config: Mapping[str, Any], num_supernodes: int, out: str | Path,
                 num_canaries: int, *, simulate_fn: Any = None) -> dict[str, Any]:
    """Run the federation with canaries into ``out/run``, audit it, write ``out/audit.json``."""
    from fl_app.experiments.simulate import simulate

    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    config = {**run_config, "audit-canaries": num_canaries, "output-dir": str(out),
              "run-name": "run"}
    run_dir = Path((simulate_fn or simulate)(config, num_supernodes=num_supernodes))
    return audit_run(run_dir, out)


def audit_run(run_dir: Path, out: Path) -> dict[str, Any]:
    """Score the canaries of a finished run with canaries, compute the bound, write the audit."""
    out.mkdir(parents=True, exist_ok=True)
    cfg, model = load_final_model(run_dir)
    num_nodes = int(layout.read_summary(run_dir)["num_nodes"])
    plan = run_canaries(cfg, num_nodes)
    scores = canary_scores(model, plan, cfg.data)
    holders = sorted({int(p) for p in plan.owners[plan.included]})
    accounted, delta = accounted_privacy(run_dir, cfg, num_nodes, holders, plan)
    result = audit_bound(scores, plan.included, delta, guess_counts(len(scores)), CONFIDENCE)
    audit = {"audit": "canaries", "run_dir": str(run_dir),
             "method": "Steinke, Nasr, Jagielski 2023, one run; score = -loss on the wrong label",
             "dp": cfg.dp, "dp_level": cfg.dp_level if cfg.dp else None,
             "epsilon_accounted": accounted, **result.as_dict(),
             "canary_holders": len(holders)}
    (out / AUDIT_FILE).write_text(json.dumps(audit, indent=2) + "\n")
    draw_scores(scores, plan.included, audit, out / FIGURE_FILE)
    return audit


def accounted_privacy(run_dir: Path, cfg: Any, num_nodes: int, holders: list[int],
                      plan: Any) -> tuple[float | None, float]:
    """The largest accounted epsilon of the canary holders (None without DP), and delta.

    The delta is the run's level's (:attr:`~fl_app.privacy.levels.DPLevel.delta_of`) for
    each holder's N examples, canaries in.
    """
    if not cfg.dp:  # nothing claimed: the paper's delta, so that 2 m delta stays small
        return None, cfg.dp_delta or NO_DP_DELTA
    level = DP_LEVELS[cfg.dp_level]
    sizes = [len(partition_indices(cfg.data, num_nodes)[p]) + len(plan.of_partition(p))
             for p in holders]
    delta = max(level.delta_of(cfg.dp_settings, num_nodes, n) for n in sizes)
    last: dict[int, float] = {}
    with open(run_dir / layout.CLIENTS) as f:
        for row in csv.DictReader(f):
            if row["partition"].isdigit() and row["epsilon"] not in ("", "-1.0"):
                last[int(row["partition"])] = float(row["epsilon"])
    return max((last.get(p, 0.0) for p in holders), default=0.0), delta


def draw_scores(scores: np.ndarray, included: np.ndarray, audit: Mapping[str, Any],
                path: Path) -> None:
    """Histograms of the canaries' scores, trained on or not, with the bound in the title."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    bins = np.linspace(scores.min(), scores.max(), 40)
    ax.hist(scores[included], bins=bins, alpha=0.6, label="trained on (S = +1)")
    ax.hist(scores[~included], bins=bins, alpha=0.6, label="left out (S = -1)")
    ax.set_xlabel("score: minus the final model's loss on the canary's wrong label")
    ax.set_ylabel("canaries")
    accounted = audit["epsilon_accounted"]
    ax.set_title(f"epsilon >= {audit['epsilon_lower_bound']:.2f} (95%), accounted "
                 f"{'none' if accounted is None else f'{accounted:.2f}'}; "
                 f"{audit['correct']}/{audit['guesses']} guesses right", fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
