"""``fl-audit``: measure what a run leaks (each subcommand writes audit.json and figures).

    fl-audit canaries [--set KEY=VALUE ...] [--num-supernodes 10] [--canaries 300] --out DIR
    fl-audit membership RUN_DIR [--members 300] [--shadows 4] [--out DIR]
    fl-audit reconstruct RUN_DIR [--batch-sizes 1 2 4] [--local-steps 1] [--out DIR]
    fl-audit tradeoff [--dataset digits|cifar10] [--set KEY=VALUE ...] [--jobs N] --out DIR

``canaries``: the one-run epsilon lower bound of a federation run as configured, with
``m`` canaries (:mod:`fl_app.audit.canary_audit`). ``membership``: the loss attack
and offline LiRA against a run's final model, with ``k`` shadow federations
(:mod:`fl_app.audit.membership_audit`). ``reconstruct``: gradient inversion
of one client's update at the run's final model, with and without DP-SGD
(:mod:`fl_app.audit.reconstruction_audit`). ``tradeoff``: accuracy, the canary bound and
the membership AUC against the accounted epsilon for every DP level, clean and attacked
(:mod:`fl_app.audit.tradeoff`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fl_app.audit.tradeoff import LEVELS, SETTINGS
from fl_app.errors import FLAppError


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``fl-audit``."""
    parser = argparse.ArgumentParser(prog="fl-audit", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    canaries = commands.add_parser("canaries", help="the one-run audit: train with m "
                                   "canaries, bound epsilon from below")
    canaries.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                          metavar="KEY=VALUE", help="run-config overrides (as fl-sweep --set)")
    canaries.add_argument("--preset", help="a preset of run-config overrides")
    canaries.add_argument("--num-supernodes", type=int, default=10)
    canaries.add_argument("--canaries", type=int, default=300,
                          help="m, mislabelled test images (at most the test split)")
    canaries.add_argument("--out", required=True, help="the audit folder (the run goes in "
                          "OUT/run)")
    member = commands.add_parser("membership", help="membership inference (loss attack, "
                                 "offline LiRA) against a finished run's model")
    member.add_argument("run_dir", help="a finished run's folder")
    member.add_argument("--members", type=int, default=300,
                        help="m training examples asked about, and as many test examples")
    member.add_argument("--shadows", type=int, default=4,
                        help="k shadow federations for LiRA (each one run of the target's "
                        "config; < 2: the loss attack only)")
    member.add_argument("--out", help="default RUN_DIR/audit-membership")
    rebuild = commands.add_parser("reconstruct", help="gradient inversion of one client's "
                                  "update, with and without DP-SGD")
    rebuild.add_argument("run_dir", help="a finished run's folder (its model.pt is attacked)")
    rebuild.add_argument("--out", help="where audit.json and the figure go "
                         "(default RUN_DIR/audit-reconstruct)")
    rebuild.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4])
    rebuild.add_argument("--partition", type=int, default=0, help="whose images (default 0)")
    rebuild.add_argument("--steps", type=int, default=1000, help="Adam steps per restart")
    rebuild.add_argument("--restarts", type=int, default=4)
    rebuild.add_argument("--seed", type=int, default=0)
    rebuild.add_argument("--local-steps", type=int, default=1,
                         help="full-batch SGD steps the client takes before sending (default 1: "
                              "its gradient), at the run's learning rate")
    picture = commands.add_parser("tradeoff", help="the privacy-utility-robustness picture: "
                                  "every DP level and sigma, clean and attacked, audited")
    picture.add_argument("--dataset", default="digits", choices=sorted(SETTINGS),
                         help="the federation and audit sizes (fl_app.audit.tradeoff.SETTINGS)")
    picture.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                         metavar="KEY=VALUE", help="run-config overrides of every cell "
                         "(cifar10 needs data-dir=...)")
    picture.add_argument("--levels", nargs="+", default=list(LEVELS), choices=LEVELS)
    picture.add_argument("--noise-multipliers", type=float, nargs="+",
                         help="sigma values (default: the dataset's)")
    picture.add_argument("--robust-rule", default="median", help="the attacked runs' rule")
    picture.add_argument("--attack", default="ipm", help="the attacked runs' attack")
    picture.add_argument("--jobs", type=int, default=1, help="cells run at once (fl-sweep)")
    picture.add_argument("--dry-run", action="store_true",
                         help="validate every run and print the plan; run nothing")
    picture.add_argument("--out", required=True, help="the folder of the cells and the picture")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fl-audit``; 0 ok, 2 bad input."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "canaries":
            return run_canaries_command(args)
        if args.command == "membership":
            return run_membership_command(args)
        if args.command == "tradeoff":
            return run_tradeoff_command(args)
        if args.command == "reconstruct":
            from fl_app.audit.reconstruction_audit import reconstruct_audit

            run_dir = Path(args.run_dir).expanduser()
            if not (run_dir / "model.pt").is_file():
                raise FLAppError(f"{run_dir} holds no model.pt: give a finished run's folder")
            if any(b < 1 for b in args.batch_sizes):
                raise FLAppError(f"--batch-sizes must be >= 1; got {args.batch_sizes}")
            if args.local_steps < 1:
                raise FLAppError(f"--local-steps must be >= 1; got {args.local_steps}")
            out = Path(args.out).expanduser() if args.out else run_dir / "audit-reconstruct"
            print(f"[fl-audit] writing to {out}", flush=True)
            audit = reconstruct_audit(run_dir, out, batch_sizes=args.batch_sizes,
                                      partition=args.partition, steps=args.steps,
                                      restarts=args.restarts, seed=args.seed,
                                      local_steps=args.local_steps,
                                      progress=lambda line: print(f"[fl-audit] {line}",
                                                                  flush=True))
            for row in audit["results"]:
                print(f"[fl-audit] batch {row['batch_size']}, "
                      f"{'DP-SGD' if row['dp'] else 'no DP '}: PSNR {row['psnr_mean']:.1f} dB, "
                      f"SSIM {row['ssim_mean']:.2f}")
            print(f"[fl-audit] {out}")
    except FLAppError as exc:
        print(f"fl-audit: {exc}", file=sys.stderr)
        return 2
    return 0


def run_canaries_command(args: argparse.Namespace) -> int:
    """``fl-audit canaries``: run the federation with canaries, print and write the audit."""
    from fl_app.audit.canary_audit import canary_audit
    from fl_app.config.preset import load_preset
    from fl_app.experiments.sweep.values import parse_overrides

    config = {**(load_preset(args.preset, "--preset") if args.preset else {}),
              **parse_overrides(args.overrides)}
    print(f"[fl-audit] writing to {Path(args.out).expanduser()}", flush=True)
    audit = canary_audit(config, args.num_supernodes, args.out, args.canaries)
    accounted = audit["epsilon_accounted"]
    print(f"[fl-audit] epsilon >= {audit['epsilon_lower_bound']:.3f} at delta "
          f"{audit['delta']:.3g} (95% confidence; {audit['correct']} of {audit['guesses']} "
          f"guesses right, m = {audit['m']}); accounted: "
          f"{'none (no DP)' if accounted is None else f'{accounted:.3f}'}")
    print(f"[fl-audit] {Path(args.out).expanduser()}")
    return 0


def run_membership_command(args: argparse.Namespace) -> int:
    """``fl-audit membership``: shadows, scores, ROC; print and write the audit."""
    from fl_app.audit.membership_audit import membership_audit

    run_dir = Path(args.run_dir).expanduser()
    if not (run_dir / "model.pt").is_file():
        raise FLAppError(f"{run_dir} holds no model.pt: give a finished run's folder")
    out = Path(args.out).expanduser() if args.out else run_dir / "audit-membership"
    print(f"[fl-audit] writing to {out}", flush=True)
    try:
        audit = membership_audit(run_dir, out, num_members=args.members,
                                 num_shadows=args.shadows,
                                 progress=lambda line: print(f"[fl-audit] {line}", flush=True))
    except ValueError as exc:
        raise FLAppError(f"--members: {exc}") from None
    for name, metrics in audit["attacks"].items():
        print(f"[fl-audit] {name}: AUC {metrics['auc']:.3f}, TPR at 1% FPR "
              f"{metrics['tpr_at_1pct_fpr']:.3f}, at 0.1% FPR {metrics['tpr_at_0.1pct_fpr']:.3f}")
    print(f"[fl-audit] shadows took {audit['shadow_seconds']:.0f} s; {out}")
    return 0


def run_tradeoff_command(args: argparse.Namespace) -> int:
    """``fl-audit tradeoff``: the sweep, the audits, the table and the figure."""
    from fl_app.audit.tradeoff import TABLE_FILE, plan_tradeoff, run_tradeoff
    from fl_app.experiments.sweep.values import parse_overrides

    plan = plan_tradeoff(SETTINGS[args.dataset], levels=args.levels,
                         noise_multipliers=args.noise_multipliers,
                         robust_rule=args.robust_rule, attack=args.attack,
                         overrides=parse_overrides(args.overrides))
    out = Path(args.out).expanduser()
    print(f"[fl-audit] {len(plan.scenario_of)} runs; writing to {out}", flush=True)
    run_tradeoff(plan, out, jobs=args.jobs, dry_run=args.dry_run,
                 progress=lambda line: print(f"[fl-audit] {line}", flush=True))
    if args.dry_run:
        return 0
    print((out / TABLE_FILE).read_text(), end="")
    print(f"[fl-audit] {out}")
    return 0
