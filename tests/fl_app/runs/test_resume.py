"""Checkpoints and resume: a run killed mid-way continues to the numbers it would have had."""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
import time

import numpy as np
import pytest
import torch

from fl_app import keys
from fl_app.client_app import HonestClient
from fl_app.config import parse_run_config
from fl_app.errors import ConfigErrors
from fl_app.experiments.simulate import simulate
from fl_app.federation.roles import build_run_model
from fl_app.federation.sampling import PartitionSampler
from fl_app.runs.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    CheckpointError,
    checkpoint_to_resume,
    load_checkpoint,
    save_checkpoint,
)
from fl_app.runs.recorder import RunRecorder
from fl_app.task import get_weights
from tests._processes import Processes, with_descendants

pytestmark = pytest.mark.usefixtures("shared_engine")  # one Ray for the module's runs

# Krum against colluding IPM attackers, DP-SGD on the honest clients, 5 of 7 nodes sampled
# per round and 2 evaluated: every piece of state a round carries over is exercised (the
# model, the sampler's stream, used by fit and evaluate sampling, the DP accountants).
RUN = {"num-server-rounds": 5, "fraction-fit": 0.72, "fraction-evaluate": 0.3,
       "strategy": "krum", "attack": "ipm", "num-attackers": 1, "attack-knowledge": "colluders",
       "ipm-epsilon": 0.5, "attack-start-round": 2, "dp": True, "dp-noise-multiplier": 1.0,
       "learning-rate": 0.1}
# The aggregation's own state: centered clipping's centre, the server momentum buffer,
# and bucketing's seeded permutation, each of which a resumed run must continue.
STATEFUL_RUN = {"num-server-rounds": 5, "fraction-fit": 1.0, "strategy": "centered-clipping",
                "centered-clipping-tau": 0.05, "pre-aggregation": "bucketing",
                "server-momentum": 0.9, "server-learning-rate": 0.5, "attack": "sign-flip",
                "num-attackers": 1, "sign-flip-scale": 3.0, "learning-rate": 0.1}
NODES = 7


def read_csv(path, drop=()):
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def checkpoint_of(server_round=3, **config):
    cfg = parse_run_config({"run-name": "r", **config})
    return Checkpoint(server_round, [np.arange(6, dtype=np.float32).reshape(2, 3),
                                     np.zeros(0, np.float32)], cfg.as_dict(),
                      PartitionSampler(1).get_state(),
                      {"rounds": [{"round": 0, "test_accuracy": 0.1, "train_loss": float("nan")}],
                       "clients": [], "scores": [], "extra": {"num_nodes": 7},
                       "dp_accountants": {"3": '{"mechanism": "rdp", "history": []}'},
                       "seconds": 12.5})


# ---------------------------------------------------------------------------- the file


def test_checkpoint_round_trips_exactly(tmp_path):
    saved = checkpoint_of()
    save_checkpoint(tmp_path, saved)
    loaded = load_checkpoint(tmp_path)
    assert loaded.server_round == 3
    assert [w.dtype for w in loaded.weights] == [np.float32, np.float32]
    assert all(np.array_equal(a, b) for a, b in zip(loaded.weights, saved.weights, strict=True))
    assert loaded.config == saved.config
    assert loaded.sampler_state == saved.sampler_state
    rows = loaded.recorder_state["rounds"]
    assert rows[0]["test_accuracy"] == 0.1 and np.isnan(rows[0]["train_loss"])
    assert loaded.recorder_state["dp_accountants"] == saved.recorder_state["dp_accountants"]
    assert load_checkpoint(tmp_path / "nothing-here") is None


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, checkpoint_of(server_round=2))

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, checkpoint_of(server_round=3))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path).server_round == 2
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temporary left


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError,
                       match=r"not a readable checkpoint \(UnpicklingError\).*move it away"):
        load_checkpoint(tmp_path)
    torch.save({"format": 99}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="format 99"):
        load_checkpoint(tmp_path)


# ---------------------------------------------------------------------------- what may resume


def test_resume_needs_a_run_name():
    with pytest.raises(ConfigErrors) as info:
        parse_run_config({"resume": True})
    assert [(e.key, e.value) for e in info.value.errors] == [("resume", True)]
    assert "run-name" in str(info.value)


def test_resuming_with_another_configuration_names_every_changed_key(tmp_path):
    save_checkpoint(tmp_path, checkpoint_of(seed=1, strategy="krum", **{"num-byzantine": 1}))
    changed = parse_run_config({"run-name": "r", "resume": True, "seed": 2, "strategy": "fedavg",
                                "num-byzantine": 1, "output-dir": "/elsewhere"})
    with pytest.raises(ConfigErrors) as info:
        checkpoint_to_resume(tmp_path, changed)
    errors = {e.key: e for e in info.value.errors}
    assert set(errors) == {"seed", "strategy"}  # output-dir and resume may change
    assert errors["seed"].value == 2 and "1" in errors["seed"].allowed
    same = parse_run_config({"run-name": "r", "resume": True, "seed": 1, "strategy": "krum",
                             "num-byzantine": 1})
    assert checkpoint_to_resume(tmp_path, same).server_round == 3


def test_resume_never_overwrites_results_it_cannot_continue(tmp_path):
    cfg = parse_run_config({"run-name": "r", "resume": True})
    assert checkpoint_to_resume(tmp_path, cfg) is None  # nothing there yet: start at round 0
    (tmp_path / "rounds.csv").write_text("round\n0\n")
    with pytest.raises(ConfigErrors, match=r"holds results but no checkpoint\.pt"):
        checkpoint_to_resume(tmp_path, cfg)


# ---------------------------------------------------------------------------- carried state


def test_sampler_state_continues_the_same_draws():
    a, b = PartitionSampler(5), PartitionSampler(0)
    a._rng.random(7)
    b.set_state(json.loads(json.dumps(a.get_state())))
    assert np.array_equal(a._rng.choice(100, 10, replace=False),
                          b._rng.choice(100, 10, replace=False))


def test_recorder_state_restores_rows_and_drops_rows_after_the_checkpoint(tmp_path):
    cfg = parse_run_config({"num-server-rounds": 3})
    first = RunRecorder(cfg, tmp_path)
    first.on_evaluate(0, 2.3, 0.1, [np.zeros(2, np.float32)])
    state = json.loads(json.dumps(first.get_state()))
    first.on_evaluate(1, 2.0, 0.3, [np.ones(2, np.float32)])  # killed before its checkpoint
    assert len(read_csv(tmp_path / "rounds.csv")) == 2
    RunRecorder(cfg, tmp_path).set_state(state)
    assert [r["round"] for r in read_csv(tmp_path / "rounds.csv")] == ["0"]
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "running"


def test_a_dp_client_without_state_continues_from_the_accountant_it_reported():
    """A resumed node starts empty; the accountant the server returns makes it the same client."""
    cfg = parse_run_config({"dp": True, "dp-noise-multiplier": 1.0})
    weights = get_weights(build_run_model(cfg))
    kept = HonestClient(cfg, 2, 5, simulated=True)  # seeded: the weights can be compared
    _, _, first = kept.fit(weights, {keys.SERVER_ROUND: 1})
    w_kept, _, second = kept.fit(weights, {keys.SERVER_ROUND: 2})
    resumed = HonestClient(cfg, 2, 5, simulated=True)  # empty context.state
    returned = first[keys.DP_ACCOUNTANT_STATE]
    w_resumed, _, again = resumed.fit(weights, {keys.SERVER_ROUND: 2,
                                                keys.DP_ACCOUNTANT_STATE: returned})
    assert again[keys.EPSILON] == second[keys.EPSILON] > first[keys.EPSILON] > 0
    assert again[keys.DP_ACCOUNTANT_STATE] == second[keys.DP_ACCOUNTANT_STATE]
    assert all(np.array_equal(a, b) for a, b in zip(w_kept, w_resumed, strict=True))
    # The node's own state wins over what a server sends (it cannot rewind a budget)
    _, _, third = kept.fit(weights, {keys.SERVER_ROUND: 3,
                                     keys.DP_ACCOUNTANT_STATE: first[keys.DP_ACCOUNTANT_STATE]})
    assert third[keys.EPSILON] > second[keys.EPSILON]


# ---------------------------------------------------------------------------- kill and resume


@pytest.mark.parametrize("RUN", [RUN, STATEFUL_RUN], ids=["krum-ipm-dp", "stateful-aggregation"])
def test_a_run_killed_mid_way_resumes_to_the_uninterrupted_numbers(tmp_path, RUN):  # noqa: N803
    """SIGKILL the whole simulation (driver, Ray, workers) after round 2, then resume."""
    out = tmp_path / "runs"
    killed = {**RUN, "output-dir": str(out), "run-name": "killed"}
    code = ("import sys, json; from fl_app.experiments.simulate import simulate; "
            f"simulate(json.loads(sys.argv[1]), num_supernodes={NODES})")
    processes = Processes(tmp_path, os.environ)
    run = processes.start("killed-run", [sys.executable, "-c", code, json.dumps(killed)])
    run_dir = out / "killed"
    try:
        deadline = time.monotonic() + 300
        while True:
            run.track()
            ckpt = load_checkpoint(run_dir) if (run_dir / CHECKPOINT_FILE).exists() else None
            if ckpt is not None and ckpt.server_round >= 2:
                break
            assert run.returncode is None, run.log_tail()
            assert time.monotonic() < deadline, "no checkpoint of round 2 in 300 s"
            time.sleep(0.05)
        run.track()
        for proc in sorted(with_descendants(run.seen), key=lambda p: p.pid):
            os.kill(proc.pid, signal.SIGKILL)  # a crash: nobody gets to clean up
        run.wait(30)
    finally:
        processes.stop_all()
    assert not processes.leftovers()
    cut = load_checkpoint(run_dir).server_round
    assert 2 <= cut < RUN["num-server-rounds"], "the run was not interrupted mid-way"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"

    resumed = simulate({**killed, "resume": True}, num_supernodes=NODES)
    reference = simulate({**RUN, "output-dir": str(out), "run-name": "reference"},
                         num_supernodes=NODES)
    assert resumed == run_dir
    got, want = (read_csv(d / "rounds.csv", drop=("seconds",)) for d in (resumed, reference))
    assert [r["round"] for r in got] == [str(r) for r in range(RUN["num-server-rounds"] + 1)]
    assert got == want
    if RUN.get("dp"):  # the DP accountants were carried over: epsilon grows across the cut
        eps = [float(r["epsilon_max"]) for r in got[1:]]
        assert eps == sorted(eps) and eps[cut] > eps[cut - 1]
    else:  # centered clipping clipped in the rounds after the cut too
        assert all(r["clipped_clients"] for r in got[cut + 1:])
    assert any(r["byzantine_clients"] for r in got)  # the attack did run
    drop = ("node",)  # simulated node ids are random per run
    assert read_csv(resumed / "clients.csv", drop) == read_csv(reference / "clients.csv", drop)
    assert read_csv(resumed / "krum_scores.csv") == read_csv(reference / "krum_scores.csv")
    assert (resumed / "krum_scores.csv").exists() == (RUN["strategy"] == "krum")
    for a, b in zip(torch.load(resumed / "model.pt"), torch.load(reference / "model.pt"),
                    strict=True):
        assert torch.equal(a, b)
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["final"] == json.loads((reference / "summary.json").read_text())["final"]


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    cfg = {"num-server-rounds": 2, "output-dir": str(tmp_path), "run-name": "done",
           "fraction-fit": 1.0}
    run_dir = simulate(cfg, num_supernodes=3)
    before = read_csv(run_dir / "rounds.csv")
    assert simulate({**cfg, "resume": True}, num_supernodes=3) == run_dir
    assert read_csv(run_dir / "rounds.csv") == before
    assert load_checkpoint(run_dir).server_round == 2
