"""A run that cannot make progress stops at start or after ``max-failed-rounds``, resumable."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from fl_app.config import parse_run_config
from fl_app.errors import ConfigErrors
from fl_app.experiments.simulate import simulate
from fl_app.federation.checks import federation_errors
from fl_app.federation.progress import ProgressGuard, RunStalledError
from fl_app.runs.checkpoint import load_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def report(server_round, kept_global, num_failures, errors=()):
    return SimpleNamespace(server_round=server_round, kept_global=kept_global,
                           num_failures=num_failures, errors=list(errors), note="why")


def test_the_guard_stops_after_the_limit_of_stalled_rounds_in_a_row_only():
    guard = ProgressGuard(2)
    guard.observe(report(1, True, 3, ["ValueError: a"]))
    guard.check()
    guard.observe(report(2, False, 1))  # progress: the streak starts over
    guard.observe(report(3, True, 0))  # kept without failures (too few results): no stall
    guard.observe(report(4, True, 2, ["ValueError: b", "OSError: c"]))
    guard.check()
    guard.observe(report(5, True, 2, ["ValueError: b"]))
    with pytest.raises(RunStalledError, match=r"rounds 4-5.*ValueError: b; OSError: c.*"
                                              r"after round 4, at round 5"):
        guard.check()
    never = ProgressGuard(0)
    for r in range(1, 10):
        never.observe(report(r, True, 1))
    never.check()


def test_a_resumed_guard_continues_the_streak_its_rounds_csv_ends_with():
    """Resumed without a fix, a run stops at its next stalled round, not two rounds later."""
    rows = [{"round": 0, "kept_global": False, "num_failures": 0},
            {"round": 1, "kept_global": True, "num_failures": 3},  # then progress
            {"round": 2, "kept_global": False, "num_failures": 1},
            {"round": 3, "kept_global": True, "num_failures": 2}]  # the checkpoint's last
    guard = ProgressGuard(2)
    guard.resume_from(rows, ["OSError: broken JPEG"])
    guard.check()
    guard.observe(report(4, True, 2))
    with pytest.raises(RunStalledError, match=r"rounds 3-4.*OSError: broken JPEG"):
        guard.check()
    fixed = ProgressGuard(2)
    fixed.resume_from(rows, ["OSError: broken JPEG"])
    fixed.observe(report(4, False, 0))  # fixed: progress, the streak starts over
    fixed.observe(report(5, True, 1))
    fixed.check()
    clean = ProgressGuard(2)
    clean.resume_from(rows[:3], ["stale"])  # ends with progress: no streak, no errors
    assert clean.stalled == [] and clean.errors == []


def test_more_partitions_than_examples_fail_before_round_one_naming_num_partitions():
    """The issue's case: 10,000 nodes on the digits' 1,437 training images."""
    cfg = parse_run_config({"num-server-rounds": 2, "fraction-fit": 0.01005})
    (error,) = federation_errors(cfg, 10_000, simulated=True)
    assert error.key == "num-partitions" and "at most 1437" in str(error)
    dirichlet = parse_run_config({"partitioning": "dirichlet", "dirichlet-alpha": 0.1})
    (error,) = federation_errors(dirichlet, 100, simulated=True)
    assert error.key == "num-partitions" and "dirichlet-alpha" in str(error)
    assert federation_errors(dirichlet, 10, simulated=True) == []
    assert federation_errors(cfg, 10_000, simulated=False) == []  # devices: their own configs


@pytest.mark.usefixtures("shared_engine")
def test_a_simulation_with_more_partitions_than_examples_stops_at_start(tmp_path):
    with pytest.raises(ConfigErrors, match="num-partitions"):
        simulate({"num-server-rounds": 2, "fraction-fit": 0.1, "partitioning": "dirichlet",
                  "dirichlet-alpha": 0.1, "output-dir": str(tmp_path), "run-name": "r"},
                 num_supernodes=100)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "failed" and "num-partitions" in summary["error"]
    with open(tmp_path / "r" / "clients.csv") as f:
        assert list(csv.DictReader(f)) == []  # no client trained


def write_images(root, valid):
    """A 2-class ImageFolder; with ``valid=False`` its training files are not images."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 6)):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                path = folder / f"{i}.png"
                if split == "train" and not valid:
                    path.write_bytes(b"not an image")
                else:
                    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(path)


@pytest.mark.usefixtures("shared_engine")
def test_a_run_whose_clients_all_fail_stops_reports_their_error_and_resumes_once_fixed(
        tmp_path):
    data = tmp_path / "images"
    write_images(data, valid=False)  # the server's test split is fine, the clients' data not
    config = {"dataset": "cifar10", "data-dir": str(data), "num-server-rounds": 3,
              "fraction-fit": 1.0, "output-dir": str(tmp_path), "run-name": "stalled"}
    with pytest.raises(RuntimeError, match="no progress in 2 rounds in a row"):
        simulate(config, num_supernodes=3)
    run_dir = tmp_path / "stalled"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "RunStalledError" in summary["error"]
    assert any("cannot identify image file" in e for e in summary["client_errors"])
    with open(run_dir / "rounds.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["round"] for r in rows] == ["0", "1"]  # round 2 stopped the run
    assert rows[1]["kept_global"] == "True" and rows[1]["num_failures"] == "3"
    assert load_checkpoint(run_dir).server_round == 1

    write_images(data, valid=True)  # the cause fixed; the config is the same
    simulate({**config, "resume": True}, num_supernodes=3)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished"
    with open(run_dir / "rounds.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["round"] for r in rows] == ["0", "1", "2", "3"]
    assert all(r["kept_global"] == "False" and r["num_clients"] == "3" for r in rows[2:])


def test_max_failed_rounds_must_be_a_count():
    with pytest.raises(ConfigErrors, match="max-failed-rounds"):
        parse_run_config({"max-failed-rounds": -1})
