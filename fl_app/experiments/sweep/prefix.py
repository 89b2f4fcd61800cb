"""Rounds before the attack, run once for the cells that agree up to it.

Cells that differ only in the attack (its name and parameters) compute the same
rounds ``1 .. attack-start-round - 1``: before its start round a Byzantine client
trains honestly and the omniscient adversary corrupts nothing, and every round is a
pure function of (seed, round, partition) and the state a checkpoint holds
(:mod:`fl_app.runs.checkpoint`). So the first such cell to reach its start round
leaves its checkpoint of the round before in ``<sweep>/.prefixes/<key>/``, and every
later cell of the group starts from a copy of it instead of from round 0 (a resume,
with its own configuration written into the copy).

What must agree is everything but the attack: the seed, the data, the strategy, the
declared f, ``num-attackers`` and ``attack-knowledge`` (who is flagged Byzantine,
who trains without DP), ``attack-start-round``, even ``num-server-rounds`` (DP can
calibrate its noise to it). The backdoor is its own group: its rounds record
``backdoor_accuracy`` from round 1 on. ``attack = 'none'`` and attacks from round 1
share nothing. A test checks that a cell started from a prefix writes the same
``rounds.csv`` and ``clients.csv`` as the same cell run alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fl_app.config import RunConfig, parse_run_config
from fl_app.config.methods import ATTACK, DECLARED
from fl_app.experiments.sweep.cells import RoundCallback, comparable_config
from fl_app.runs.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)

PREFIX_DIR = ".prefixes"
# The keys a cell may differ in and still share the rounds before its attack
ATTACK_ONLY_KEYS = frozenset({ATTACK} | {k for k, d in DECLARED.items() if d.role == ATTACK})


def prefix_key(run_config: Mapping[str, Any] | RunConfig) -> str | None:
    """The group of cells that compute the same rounds before the attack; None: no group."""
    cfg = run_config if isinstance(run_config, RunConfig) else parse_run_config(run_config)
    if cfg.attack == "none" or cfg.attack_start_round <= 1:
        return None
    shared = {k: v for k, v in comparable_config(cfg.as_dict()).items()
              if k not in ATTACK_ONLY_KEYS}
    shared["records-backdoor-accuracy"] = cfg.attack == "backdoor"
    text = json.dumps(shared, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def prefix_dir(out: Path, key: str) -> Path:
    """Where the group ``key`` keeps its checkpoint of the round before the attack."""
    return out / PREFIX_DIR / key


def start_from_prefix(run_config: Mapping[str, Any], out: Path, cell_dir: Path) -> bool:
    """Put the group's prefix into the new ``cell_dir`` as this cell's checkpoint.

    Returns whether it did (then the cell resumes after round ``attack-start-round - 1``);
    False when the cell has no group or its group has no prefix yet.
    """
    cfg = parse_run_config(run_config)
    key = prefix_key(cfg)
    if key is None:
        return False
    try:
        checkpoint = load_checkpoint(prefix_dir(out, key))
    except CheckpointError:
        return False
    if checkpoint is None or checkpoint.server_round != cfg.attack_start_round - 1:
        return False
    checkpoint.config = cfg.as_dict()  # the same rounds, now this cell's to continue
    cell_dir.mkdir(parents=True)
    save_checkpoint(cell_dir, checkpoint)
    return True


def keeping_prefix(run_config: Mapping[str, Any], out: Path, cell_dir: Path,
                   on_round: RoundCallback) -> RoundCallback:
    """``on_round``, plus: at the attack's first round, keep the checkpoint of the one before.

    The server evaluates round ``r`` before it checkpoints it, so while the row of
    the start round is reported, ``cell_dir`` still holds the checkpoint of the round
    before: the prefix. It is kept once per group.
    """
    cfg = parse_run_config(run_config)
    key = prefix_key(cfg)
    if key is None:
        return on_round
    target = prefix_dir(out, key)

    def on_round_keeping(row: dict[str, Any]) -> None:
        on_round(row)
        if int(row["round"]) == cfg.attack_start_round and not (target / CHECKPOINT_FILE).exists():
            keep(cfg, cell_dir, target)

    return on_round_keeping


def keep(cfg: RunConfig, cell_dir: Path, target: Path) -> None:
    """Copy ``cell_dir``'s checkpoint to ``target`` if it is the round before the attack."""
    try:
        checkpoint = load_checkpoint(cell_dir)
    except CheckpointError:
        return
    if checkpoint is None or checkpoint.server_round != cfg.attack_start_round - 1:
        return  # not the round before the attack: share nothing rather than a wrong state
    target.mkdir(parents=True, exist_ok=True)
    save_checkpoint(target, checkpoint)  # atomic: a parallel job sees all of it or none
