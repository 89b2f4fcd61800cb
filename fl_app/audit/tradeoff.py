"""``fl-audit tradeoff``: the privacy-utility-robustness picture, as one sweep plus two audits.

For each DP level (``record``, ``client``, ``central``) and noise multiplier, and once
without DP, federations are run with canaries in the clients' data (``audit-canaries``,
:mod:`fl_app.audit.canaries`):

* **clean**: FedAvg, no attack;
* **robust**: a robust rule (default the coordinate-wise median), no attack: what the
  rule itself costs next to DP;
* **attacked**: the robust rule against an attack (default IPM, each attacker from its
  own update).

``central`` cannot aggregate with a robust rule (refused at start: the server would see
clean individual updates), so it has no *robust* run and its *attacked* run is FedAvg
under the same attack: what central DP leaves to robustness.

The runs are one :func:`fl_app.experiments.sweep.run_sweep` (resumable, ``--jobs``, its
progress display). Each finished cell, and each that stalled (its clients' updates all
rejected, e.g. NaN from diverged training: it stops with ``RunStalledError`` and is a
result, ``status`` says so), is then audited twice, without training anything
more: the one-run canary audit (:func:`fl_app.audit.canary_audit.audit_run`: the epsilon
lower bound at 95%) and the loss membership attack (Yeom et al. 2018) on ordinary
training examples against test examples that are not canaries
(:func:`fl_app.audit.membership_audit.membership_audit` with no shadows). ``tradeoff.csv``
and ``tradeoff.md`` hold one row per cell; ``tradeoff.png`` draws, against the accounted
epsilon, the final test accuracy, the audit's lower bound (with the line ``bound =
accounted``: a point above it would prove the accounting wrong) and the membership AUC.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fl_app.audit.canaries import run_canaries
from fl_app.audit.canary_audit import audit_run
from fl_app.audit.membership_audit import membership_audit
from fl_app.audit.reconstruction_audit import run_config_of
from fl_app.experiments.sweep.cells import cell_name, expand_grid
from fl_app.runs import layout

LEVELS = ("record", "client", "central")
SCENARIOS = ("clean", "robust", "attacked")
CSV_FILE = "tradeoff.csv"
TABLE_FILE = "tradeoff.md"
FIGURE_FILE = "tradeoff.png"
AUDIT_FILE = "audit.json"
STALLED = "RunStalledError"  # fl_app.federation.progress: the run stopped, no progress
AUDIT_DELTA = 1e-5  # every level's delta: the one-run bound adds 2 m delta to its p-value


@dataclass(frozen=True)
class TradeoffSetting:
    """A dataset's federation for the picture: its run config and audit sizes."""

    run_config: dict[str, Any]
    num_supernodes: int
    num_canaries: int
    num_members: int
    num_attackers: int
    noise_multipliers: tuple[float, ...]


#: The settings ``--dataset`` picks. digits: the canary audit's federation of the README
#: (10 clients, 10 rounds of 10 local epochs), 2 attackers; cifar10: the README's DP
#: CIFAR-10 study (50 clients of 1,000 images, 10 a round, 10 rounds), 10 attackers.
SETTINGS: dict[str, TradeoffSetting] = {
    "digits": TradeoffSetting(
        {"dataset": "digits", "local-epochs": 10, "learning-rate": 0.1,
         "num-server-rounds": 10, "fraction-fit": 1.0},
        num_supernodes=10, num_canaries=200, num_members=150, num_attackers=2,
        noise_multipliers=(0.5, 1.0, 2.0)),
    "cifar10": TradeoffSetting(
        {"dataset": "cifar10", "num-server-rounds": 10, "fraction-fit": 0.2,
         "learning-rate": 0.05},
        num_supernodes=50, num_canaries=1000, num_members=1000, num_attackers=10,
        noise_multipliers=(0.5, 1.0)),
}


@dataclass
class TradeoffPlan:
    """The sweep behind the picture: its base config and grids, and what each cell is."""

    base: dict[str, Any]
    grids: list[dict[str, list[Any]]]
    num_supernodes: int
    num_members: int
    scenario_of: dict[str, str] = field(default_factory=dict)  # cell name -> SCENARIOS


def plan_tradeoff(setting: TradeoffSetting, *, levels: Sequence[str] = LEVELS,
                  noise_multipliers: Sequence[float] | None = None,
                  robust_rule: str = "median", attack: str = "ipm",
                  overrides: Mapping[str, Any] | None = None) -> TradeoffPlan:
    """The grids: no DP and each level x sigma, clean, robust and attacked (see the module)."""
    sigmas = list(noise_multipliers or setting.noise_multipliers)
    base = {**setting.run_config, "audit-canaries": setting.num_canaries,
            "dp-delta": AUDIT_DELTA, **(overrides or {})}
    none = {"attack": ["none"], "num-attackers": [0]}
    clean = {"strategy": ["fedavg"], **none}
    robust = {"strategy": [robust_rule], **none}
    attacked = {"attack": [attack], "num-attackers": [setting.num_attackers]}
    robust_levels = [level for level in levels if level != "central"]
    grids: list[dict[str, list[Any]]] = [{"dp": [False], **clean}, {"dp": [False], **robust},
                                         {"dp": [False], "strategy": [robust_rule], **attacked}]
    if levels:
        grids.append({"dp": [True], "dp-level": list(levels),
                      "dp-noise-multiplier": sigmas, **clean})
    if robust_levels:
        dp = {"dp": [True], "dp-level": robust_levels, "dp-noise-multiplier": sigmas}
        grids += [{**dp, **robust}, {**dp, "strategy": [robust_rule], **attacked}]
    if "central" in levels:
        grids.append({"dp": [True], "dp-level": ["central"], "dp-noise-multiplier": sigmas,
                      "strategy": ["fedavg"], **attacked})
    plan = TradeoffPlan(base, grids, setting.num_supernodes, setting.num_members)
    for cell in expand_grid(grids):
        plan.scenario_of[cell_name(cell)] = (
            "attacked" if cell["attack"] != "none"
            else "clean" if cell["strategy"] == "fedavg" else "robust")
    return plan


def run_tradeoff(plan: TradeoffPlan, out: str | Path, *, jobs: int = 1,
                 sweep: Callable[..., Any] | None = None, dry_run: bool = False,
                 progress: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run the plan's sweep into ``out``, audit every cell, write the table and the figure.

    ``dry_run``: validate every cell and print the plan (the sweep's), run nothing.

    Raises:
        FLAppError: a cell failed (the others are audited and written first).
    """
    from fl_app.errors import FLAppError
    from fl_app.experiments.sweep import run_sweep

    out = Path(out).expanduser().resolve()
    result = (sweep or run_sweep)(out, plan.grids, plan.base,
                                  num_supernodes=plan.num_supernodes, jobs=jobs,
                                  dry_run=dry_run)
    if dry_run:
        return []
    rows = []
    # A run that stalled (its clients' updates all rejected, e.g. NaN from diverged
    # training) is a result: audited at the model it stopped with. Other failures are not.
    failed = {k: v for k, v in result.failed.items() if STALLED not in v}
    for name, scenario in plan.scenario_of.items():
        if name in failed:
            continue
        progress(f"auditing {name}")
        rows.append(audit_cell(out / name, scenario, plan.num_members))
    write_table(rows, out)
    draw_tradeoff(rows, out / FIGURE_FILE)
    if failed:
        raise FLAppError("cells failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    return rows


def audit_cell(run_dir: Path, scenario: str, num_members: int) -> dict[str, Any]:
    """One row: a finished cell's accuracy, accounted epsilon, audit bound and MI AUC."""
    canary = audit_run(run_dir, run_dir / "audit-canaries")
    summary = layout.read_summary(run_dir)
    cfg = run_config_of(summary)  # the config alone: the audits load the model themselves
    plan = run_canaries(cfg, int(summary["num_nodes"]))
    member = membership_audit(run_dir, run_dir / "audit-membership", num_members=num_members,
                              num_shadows=0, exclude_test_rows=plan.rows,
                              progress=lambda line: None)
    loss = member["attacks"]["loss"]
    final = summary["final"]
    status = summary["status"] if summary["status"] != "failed" else (
        f"stalled after round {final['rounds_completed']}")
    return {"cell": run_dir.name, "dp_level": cfg.dp_level if cfg.dp else "none",
            "noise_multiplier": cfg.dp_noise_multiplier if cfg.dp else None,
            "scenario": scenario, "strategy": cfg.strategy, "attack": cfg.attack,
            "num_attackers": cfg.num_attackers,
            "final_test_accuracy": final["final_test_accuracy"],
            "epsilon_accounted": canary["epsilon_accounted"], "delta": canary["delta"],
            "epsilon_lower_bound": canary["epsilon_lower_bound"],
            "canary_guesses": canary["guesses"], "canary_correct": canary["correct"],
            "mi_loss_auc": loss["auc"], "mi_loss_tpr_at_1pct_fpr": loss["tpr_at_1pct_fpr"],
            "seconds": summary["seconds"], "status": status}


COLUMNS = ("cell", "dp_level", "noise_multiplier", "scenario", "strategy", "attack",
           "num_attackers", "final_test_accuracy", "epsilon_accounted", "delta",
           "epsilon_lower_bound", "canary_guesses", "canary_correct", "mi_loss_auc",
           "mi_loss_tpr_at_1pct_fpr", "seconds", "status")


def write_table(rows: Sequence[Mapping[str, Any]], out: Path) -> None:
    """``tradeoff.csv``, ``audit.json`` (the rows) and ``tradeoff.md`` (the README's table)."""
    with open(out / CSV_FILE, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / AUDIT_FILE).write_text(json.dumps({"audit": "tradeoff", "rows": list(rows)},
                                             indent=2) + "\n")
    lines = ["| DP level | sigma | scenario | accounted epsilon | audit's lower bound (95%) "
             "| MI AUC (loss) | test accuracy |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        sigma = "–" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:g}"
        eps = "none" if r["epsilon_accounted"] is None else f"{r['epsilon_accounted']:.3g}"
        scenario = ({"clean": "clean (fedavg)", "robust": f"{r['strategy']}, no attack"}
                    .get(r["scenario"], f"{r['attack']} x {r['num_attackers']} vs "
                                        f"{r['strategy']}"))
        stalled = "" if r["status"] == "finished" else f" ({r['status']})"
        lines.append(f"| {r['dp_level']} | {sigma} | {scenario} | {eps} | "
                     f"{r['epsilon_lower_bound']:.2f} | {r['mi_loss_auc']:.3f} | "
                     f"{r['final_test_accuracy']:.3f}{stalled} |")
    (out / TABLE_FILE).write_text("\n".join(lines) + "\n")


def draw_tradeoff(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Accuracy, audit bound and MI AUC against the accounted epsilon, per level and scenario."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4), layout="constrained")
    panels = fig.subplots(1, 3)
    metrics = (("final_test_accuracy", "final test accuracy"),
               ("epsilon_lower_bound", "audit's epsilon lower bound (95%)"),
               ("mi_loss_auc", "membership AUC (loss attack)"))
    colours = {"record": "tab:blue", "client": "tab:orange", "central": "tab:green",
               "none": "black"}
    styles = {"clean": ("o", "-"), "robust": ("s", "-."), "attacked": ("x", "--")}
    accounted = [r["epsilon_accounted"] for r in rows if r["epsilon_accounted"] is not None]
    for ax, (key, label) in zip(panels, metrics, strict=True):
        for (level, scenario), series in group_rows(rows).items():
            marker, line = styles[scenario]
            tag = f"{level}, {scenario}" if level != "none" else f"no DP, {scenario}"
            if level == "none":  # no epsilon: a horizontal line at its value
                ax.axhline(series[0][key], color=colours[level], ls=line, lw=0.8, label=tag)
                continue
            ax.plot([r["epsilon_accounted"] for r in series], [r[key] for r in series],
                    marker=marker, ls=line, color=colours[level], label=tag)
        if accounted:
            ax.set_xscale("log")
        if key == "epsilon_lower_bound" and accounted:  # above it, the accounting is wrong
            top = max(accounted)
            (diagonal,) = ax.plot([min(accounted), top], [min(accounted), top], color="grey",
                                  lw=0.8, ls=":", label="bound = accounted")
            ax.legend(handles=[diagonal], fontsize=7)
            ax.set_yscale("symlog", linthresh=0.5)  # bounds of 0 and near the diagonal alike
        if key == "mi_loss_auc":
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("accounted epsilon (max over the canary holders)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    panels[0].legend(fontsize=7)
    panels[0].set_title("utility", fontsize=9)
    panels[1].set_title("privacy, measured: the one-run audit", fontsize=9)
    panels[2].set_title("privacy, measured: membership inference (0.5: chance)", fontsize=9)
    fig.savefig(path, dpi=120)


def group_rows(rows: Sequence[Mapping[str, Any]]
               ) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """Rows by (level, scenario), each sorted by accounted epsilon; levels, then scenarios."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    order = {name: i for i, name in enumerate(("none", *LEVELS))}
    for r in sorted(rows, key=lambda r: (order[r["dp_level"]],
                                         SCENARIOS.index(r["scenario"]))):
        groups.setdefault((r["dp_level"], r["scenario"]), []).append(r)
    for series in groups.values():
        series.sort(key=lambda r: math.inf if r["epsilon_accounted"] is None
                    else r["epsilon_accounted"])
    return groups
