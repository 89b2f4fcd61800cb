"""The result folder of a run: the one owner of its file names and of "is this the same run?".

Every module that writes or reads a run folder (the recorder, the checkpoint,
``simulate``, the sweep, the reports) takes the names from here, and a resumed run
and a sweep's finished cell are judged the same run by one comparison,
:func:`config_differences`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fl_app.config import PLACEMENT_KEYS, stored_config

SUMMARY = "summary.json"  # config, final metrics, status (running / finished / failed)
ROUNDS = "rounds.csv"  # one row per round
CLIENTS = "clients.csv"  # one row per client result
KRUM_SCORES = "krum_scores.csv"  # one row per scored update (Krum, Multi-Krum)
MODEL = "model.pt"  # the final global model's state_dict
CHECKPOINT = "checkpoint.pt"  # everything a resumed run needs (fl_app.runs.checkpoint)
ACCURACY_PLOT = "accuracy.png"  # test accuracy per round


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The run's summary.json (raises ``OSError`` / ``ValueError`` if missing or corrupt)."""
    return json.loads((Path(run_dir) / SUMMARY).read_text())


def config_differences(recorded: Mapping[str, Any], wanted: Mapping[str, Any]
                       ) -> dict[str, tuple[Any, Any]]:
    """Keys whose recorded value differs from the wanted one: ``{key: (recorded, wanted)}``.

    ``recorded`` is a config a run stored; it is read in today's keys
    (:func:`fl_app.config.stored_config`: a renamed key under its new name, a key
    added since as its default). The placement keys (where a run is written, whether
    it resumes) never make two runs different.

    >>> config_differences({"seed": 0, "strategy": "krum"}, {"seed": 1, "strategy": "krum"})
    {'seed': (0, 1)}
    >>> config_differences({"seed": 0}, {"seed": 0, "num-server-rounds": 20})
    {}
    """
    old = stored_config(recorded)
    return {key: (old.get(key), value) for key, value in wanted.items()
            if key not in PLACEMENT_KEYS and old.get(key) != value}
