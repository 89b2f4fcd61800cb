"""Checkpoints: what a run needs to continue after a crash, in one atomic file.

Everything else in a round is a pure function of (seed, round, partition): the
initial model, each client's training, the Byzantine draw, the attacks, the
omniscient hook, bucketing (each seeds its own generator; none draws from a global
stream across rounds). What a round *carries over* is only

* the global model,
* the aggregation's state (:meth:`strategies.fedavg.UpdateSpaceFedAvg.get_state`):
  centered clipping's centre and the server momentum buffer, when they are used,
* the sampler's generator (it draws from one stream, round after round),
* what the result folder has recorded so far (rounds, clients, Krum scores,
  seconds), and
* each DP client's accountant, which lives in the node's ``context.state`` and
  is lost with the run; clients report it after every fit, the checkpoint keeps
  the latest per partition, and a resumed run sends it back.

:func:`save_checkpoint` writes all of it to ``checkpoint.pt`` with
:func:`fl_app.runs.recorder.atomic_write_bytes` after every round (never half a file:
a run killed mid-write leaves the previous round's). The tensors are saved with
``torch.save`` and the rest as one JSON string, so :func:`load_checkpoint` can
use ``torch.load(weights_only=True)`` and never unpickles code.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fl_app.config import RunConfig
from fl_app.errors import ConfigError, ConfigErrors, FLAppError
from fl_app.runs.layout import CHECKPOINT, ROUNDS, config_differences
from fl_app.runs.recorder import atomic_write_bytes

CHECKPOINT_FILE = CHECKPOINT
CHECKPOINT_FORMAT = 1


class CheckpointError(FLAppError, RuntimeError):
    """A checkpoint that cannot be read (another format, or not a checkpoint at all)."""


@dataclass
class Checkpoint:
    """The state of a run after ``server_round`` (0: after evaluating the initial model)."""

    server_round: int
    weights: list[np.ndarray]
    config: dict[str, Any]  # RunConfig.as_dict() of the run that wrote it
    sampler_state: dict[str, Any]  # PartitionSampler.get_state()
    recorder_state: dict[str, Any]  # RunRecorder.get_state()
    # UpdateSpaceFedAvg.get_state(): what the aggregation carries across rounds
    strategy_state: dict[str, np.ndarray] = field(default_factory=dict)


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> None:
    """Write ``run_dir/checkpoint.pt`` atomically (readers see the old or the new one)."""
    state = {"config": checkpoint.config, "sampler": checkpoint.sampler_state,
             "recorder": checkpoint.recorder_state}
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "server_round": checkpoint.server_round,
                "weights": [torch.from_numpy(np.array(w, copy=True)) for w in checkpoint.weights],
                "strategy": {k: torch.from_numpy(np.array(v, copy=True))
                             for k, v in checkpoint.strategy_state.items()},
                "state": json.dumps(state)}, buf)
    atomic_write_bytes(run_dir / CHECKPOINT_FILE, buf.getvalue())


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """Read ``run_dir/checkpoint.pt``; ``None`` when the run never finished a round.

    Raises:
        CheckpointError: The file is not a checkpoint of this format.
    """
    path = run_dir / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        raw = torch.load(path, weights_only=True)
        if raw.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{path} has checkpoint format {raw.get('format')!r}; this version reads "
                f"format {CHECKPOINT_FORMAT}. Finish it with the version that wrote it, or "
                "start a new run (another run-name).")
        state = json.loads(raw["state"])
        return Checkpoint(int(raw["server_round"]), [t.numpy() for t in raw["weights"]],
                          state["config"], state["sampler"], state["recorder"],
                          {k: t.numpy() for k, t in raw.get("strategy", {}).items()})
    except CheckpointError:
        raise
    except Exception as exc:  # torch raises many kinds for a file that is not ours
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}). Checkpoints "
            "are written atomically, so this file was changed by something else; move it "
            "away to start the run over.") from None


def resume_errors(checkpoint: Checkpoint, cfg: RunConfig) -> list[ConfigError]:
    """Why ``cfg`` cannot continue ``checkpoint``: one error per key that changed.

    A resumed run must compute what the interrupted one would have, so every key
    but the placement keys (:data:`fl_app.config.PLACEMENT_KEYS`) must be as it was.
    """
    return [ConfigError(key, new, f"{old!r}, as in the checkpointed run",
                        f"Resuming {cfg.run_name!r} needs its configuration; to change it, "
                        "start a new run (another run-name) instead.")
            for key, (old, new) in config_differences(checkpoint.config, cfg.as_dict()).items()]


def checkpoint_to_resume(run_dir: Path, cfg: RunConfig) -> Checkpoint | None:
    """The checkpoint a ``resume = true`` run continues; ``None``: start from round 0.

    Raises:
        ConfigErrors: The configuration differs from the checkpointed run's, or the
            folder holds results but no checkpoint (they would be overwritten).
        CheckpointError: The checkpoint cannot be read.
    """
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None:
        if (run_dir / ROUNDS).exists():
            raise ConfigErrors([ConfigError(
                "resume", True, "a run folder with a checkpoint, or a new run-name",
                f"{run_dir} holds results but no {CHECKPOINT_FILE} (written by a version "
                "without checkpoints?); starting over would overwrite them.")])
        return None
    errors = resume_errors(checkpoint, cfg)
    if errors:
        raise ConfigErrors(errors)
    return checkpoint
