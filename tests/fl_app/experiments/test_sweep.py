"""Sweeps: grid expansion, up-front validation, resume, reports, and one real sweep."""

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fl_app.config import parse_run_config
from fl_app.errors import ConfigError, ConfigErrors
from fl_app.experiments import reports, sweep
from fl_app.experiments.engine import shared_ray
from fl_app.experiments.simulate import simulate
from fl_app.experiments.sweep import (
    SweepError,
    SweepProgress,
    cell_name,
    expand_grid,
    main,
    parse_grid,
    parse_value,
    plan_cells,
    run_sweep,
)
from fl_app.runs.checkpoint import Checkpoint, save_checkpoint
from fl_app.runs.recorder import ROUND_COLUMNS, RunRecorder, resolve_run_dir
from tests._processes import Processes, is_running, proc_id
from tests.conftest import REPO

SMALL = {"num-server-rounds": 2, "fraction-fit": 1.0}
GRID = {"num-attackers": [1, 3], "strategy": ["fedavg", "krum"]}
ATTACK = {**SMALL, "attack": "ipm", "attack-knowledge": "omniscient", "num-byzantine": -1}
NAMES = ["num-attackers=1,strategy=fedavg", "num-attackers=1,strategy=krum",
         "num-attackers=3,strategy=fedavg", "num-attackers=3,strategy=krum"]


class Recorder(RunRecorder):
    def plot_accuracy(self):  # matplotlib per round is the slow part of a fake run
        pass


@pytest.fixture
def no_png(monkeypatch):
    """Reports build their figures but skip rendering PNGs (tests of the sweep's mechanics)."""
    monkeypatch.setattr(reports.figures, "save", lambda fig, path: fig)


class FakeRunner:
    """Writes a result folder as a run would (RunRecorder), without Flower or Ray."""

    def __init__(self, fail=()):
        self.calls = []
        self.resumed = []
        self.fail = set(fail)

    def __call__(self, run_config, num_supernodes, on_round):
        cfg = parse_run_config(run_config)
        self.calls.append(cfg.run_name)
        self.resumed.append(cfg.resume)
        if cfg.run_name in self.fail:
            raise RuntimeError("boom")
        run_dir = resolve_run_dir(cfg)
        recorder = Recorder(cfg, run_dir, on_round=on_round)
        for rnd in range(cfg.num_server_rounds + 1):
            recorder.on_evaluate(rnd, 1.0 / (rnd + 1), 0.3 * rnd + 0.01 * cfg.num_attackers,
                                 [np.zeros(2, dtype=np.float32)])
        return run_dir


class SlowRunner:
    """A cell that takes ten minutes (a sweep to interrupt); it says so in ``started_dir``."""

    def __init__(self, started_dir):
        self.started_dir = started_dir

    def __call__(self, run_config, num_supernodes, on_round):
        (Path(self.started_dir) / str(os.getpid())).touch()
        time.sleep(600)


def quiet(total=10):
    progress = SweepProgress(total)
    progress.say = lambda line: None
    return progress


# ---------------------------------------------------------------------------- values, grid


@pytest.mark.parametrize(("text", "value"), [
    ("3", 3), ("-1", -1), ("0.1", 0.1), ("1e-3", 0.001), ("true", True), ("false", False),
    ("'krum'", "krum"), ('"a,b"', "a,b"), ("krum", "krum"), ("/data/cifar", "/data/cifar"),
    ("", ""), ("2024-01-01", "2024-01-01"),
])
def test_values_parse_like_toml_or_as_bare_strings(text, value):
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


def test_grid_values_split_at_commas_outside_quotes():
    assert parse_grid(["strategy=fedavg,'krum'", "ipm-epsilon=0.1,1", "dp=true,false"]) == {
        "strategy": ["fedavg", "krum"], "ipm-epsilon": [0.1, 1], "dp": [True, False]}
    assert parse_grid(["data-dir='/a,b','/c'"]) == {"data-dir": ["/a,b", "/c"]}


@pytest.mark.parametrize(("args", "key"), [
    (["strategy"], "--grid"), (["=krum"], "--grid"), (["strategy=fedavg,,krum"], "strategy"),
    (["strategy=krum", "strategy=fedavg"], "strategy"),
])
def test_malformed_grid_arguments_name_the_key(args, key):
    with pytest.raises((ConfigError, ConfigErrors)) as info:
        parse_grid(args)
    errors = info.value.errors if isinstance(info.value, ConfigErrors) else [info.value]
    assert [e.key for e in errors] == [key]


def test_grid_expands_to_the_product_in_order_with_deterministic_names(tmp_path):
    cells = plan_cells(tmp_path, {"seed": 1}, [GRID])
    assert [c.name for c in cells] == NAMES
    assert [c.overrides for c in cells] == expand_grid([GRID])
    assert cells[1].overrides == {"num-attackers": 1, "strategy": "krum"}
    assert cells[1].run_config == {"seed": 1, "num-attackers": 1, "strategy": "krum",
                                   "output-dir": str(tmp_path), "run-name": NAMES[1]}
    assert [c.name for c in plan_cells(tmp_path, {}, [GRID])] == NAMES  # same every time


def test_grids_combine_as_a_union_and_no_grid_is_one_base_cell(tmp_path):
    baseline = {"strategy": ["fedavg", "krum"], "num-attackers": [0], "attack": ["none"]}
    cells = plan_cells(tmp_path, {}, [GRID, baseline, GRID])
    assert [c.name for c in cells] == [*NAMES, "strategy=fedavg,num-attackers=0,attack=none",
                                       "strategy=krum,num-attackers=0,attack=none"]
    assert [c.name for c in plan_cells(tmp_path, {"seed": 3}, [])] == ["base"]
    overlapping = [{"num-attackers": [3]}, {"ipm-epsilon": [1.0, 0.1], "num-attackers": [3]}]
    assert [c.name for c in plan_cells(tmp_path, {"ipm-epsilon": 1.0}, overlapping)] == [
        "num-attackers=3", "ipm-epsilon=0.1,num-attackers=3"]  # the same run once
    assert cell_name({"data-dir": "/a/b", "dp": True, "ipm-epsilon": 1.0}) == \
        "data-dir=_a_b,dp=true,ipm-epsilon=1.0"


# ---------------------------------------------------------------------------- validation


def errors_of(info):
    return {e.key: e for e in info.value.errors}


def test_bad_keys_and_values_are_reported_together_before_anything_runs(tmp_path):
    runner = FakeRunner()
    out = tmp_path / "sweep"
    with pytest.raises(ConfigErrors) as info:
        run_sweep(out, {"strategy": ["fedavg", "bogus"], "num-atackers": [1]}, SMALL,
                  runner=runner, progress=quiet())
    errors = errors_of(info)
    assert set(errors) == {"strategy", "num-atackers"}
    assert errors["strategy"].value == "bogus"
    assert "krum" in errors["strategy"].allowed  # lists what is allowed
    assert "strategy=bogus" in str(errors["strategy"])  # names the cell
    assert "Unknown key" in str(errors["num-atackers"])
    assert runner.calls == [] and not out.exists()


def test_federation_rules_are_checked_per_cell_up_front(tmp_path):
    # Krum with f = q needs 10 >= 2q + 3 sampled clients: q = 4 cannot run on 10 nodes.
    with pytest.raises(ConfigErrors) as info:
        run_sweep(tmp_path, {"num-attackers": [1, 4], "strategy": ["krum"]}, ATTACK,
                  num_supernodes=10, runner=FakeRunner(), progress=quiet())
    error = errors_of(info)["num-byzantine"]
    assert "n >= 2f + 3" in str(error) and "num-attackers=4" in str(error)
    assert "num-attackers=1" not in str(error)


@pytest.mark.parametrize("where", ["overrides", "grid"])
def test_the_sweep_owns_output_dir_and_run_name(tmp_path, where):
    args = {"overrides": {"run-name": "x"}} if where == "overrides" else \
        {"grid": {"output-dir": ["/a", "/b"]}}
    with pytest.raises(ConfigErrors, match="--out"):
        run_sweep(tmp_path, runner=FakeRunner(), progress=quiet(), **args)


def test_a_key_both_set_and_swept_is_an_error(tmp_path):
    with pytest.raises(ConfigErrors, match="'strategy'"):
        run_sweep(tmp_path, {"strategy": ["krum"]}, {"strategy": "fedavg"},
                  runner=FakeRunner(), progress=quiet())


def test_set_preset_is_the_same_as_the_preset_option(tmp_path):
    by_option = run_sweep(tmp_path / "a", GRID, {"num-server-rounds": 3},
                          preset="seed-krum-ipm-small", runner=FakeRunner(), progress=quiet())
    by_set = run_sweep(tmp_path / "b", GRID, {"num-server-rounds": 3,
                                             "preset": "seed-krum-ipm-small"},
                       runner=FakeRunner(), progress=quiet())
    for name in NAMES:
        a = json.loads((by_option.out / name / "summary.json").read_text())["config"]
        b = json.loads((by_set.out / name / "summary.json").read_text())["config"]
        assert a.pop("output-dir") != b.pop("output-dir")
        assert a == b and a["dataset"] == "digits" and a["num-server-rounds"] == 3


def test_a_sweep_keeps_grid_values_at_their_default_against_the_preset(tmp_path):
    """Unlike the preset key in one run, the sweep knows its values: q = 0 stays 0."""
    result = run_sweep(tmp_path, {"num-attackers": [0], "attack": ["none"]},
                       {"num-server-rounds": 3}, preset="seed-krum-ipm-small",
                       runner=FakeRunner(), progress=quiet())
    config = json.loads((result.out / "num-attackers=0,attack=none" / "summary.json")
                        .read_text())["config"]
    assert config["num-attackers"] == 0 and config["attack"] == "none"
    assert config["partitioning"] == "dirichlet"  # from the preset


@pytest.mark.parametrize(("grid", "overrides", "preset_option"), [
    ({"preset": ["seed-krum-ipm", "seed-krum-ipm-small"]}, {}, None),
    (GRID, {"preset": "seed-krum-ipm"}, "seed-krum-ipm-small"),
])
def test_one_preset_per_sweep(tmp_path, grid, overrides, preset_option):
    with pytest.raises(ConfigErrors, match="'preset'"):
        run_sweep(tmp_path, grid, overrides, preset=preset_option, runner=FakeRunner(),
                  progress=quiet())


# ---------------------------------------------------------------------------- resume


def test_resume_skips_finished_cells_and_redoes_an_interrupted_one(tmp_path, no_png):
    runner = FakeRunner()
    first = run_sweep(tmp_path, GRID, ATTACK, runner=runner, progress=quiet())
    assert runner.calls == NAMES and first.ran == NAMES and not first.failed
    manifest = json.loads((tmp_path / "sweep.json").read_text())
    assert [c["name"] for c in manifest["cells"]] == NAMES

    runner.calls.clear()
    again = run_sweep(tmp_path, GRID, ATTACK, runner=runner, progress=quiet())
    assert runner.calls == [] and again.skipped == NAMES

    half = tmp_path / NAMES[2]  # as a run killed after round 1 leaves it
    summary = json.loads((half / "summary.json").read_text())
    (half / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    (half / "stale.txt").write_text("from the interrupted run")
    resumed = run_sweep(tmp_path, GRID, ATTACK, runner=runner, progress=quiet())
    assert runner.calls == [NAMES[2]] and resumed.ran == [NAMES[2]]
    assert not (half / "stale.txt").exists()  # started over in a clean folder
    assert json.loads((half / "summary.json").read_text())["status"] == "finished"
    assert {p.name for p in tmp_path.iterdir()} >= set(NAMES)
    assert not any(p.name.endswith("-2") for p in tmp_path.iterdir())  # no duplicate folders


def test_an_interrupted_cell_with_a_checkpoint_continues_instead_of_starting_over(tmp_path,
                                                                                   no_png):
    runner = FakeRunner()
    run_sweep(tmp_path, GRID, ATTACK, runner=runner, progress=quiet())
    half = tmp_path / NAMES[1]  # as a run killed after round 1 leaves it: a checkpoint
    summary = json.loads((half / "summary.json").read_text())
    (half / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    save_checkpoint(half, Checkpoint(1, [np.zeros(2, np.float32)], summary["config"], {},
                                     {}))
    (half / "kept.txt").write_text("from the interrupted run")
    lines = []
    progress = quiet()
    progress.say = lines.append
    run_sweep(tmp_path, GRID, ATTACK, runner=runner, progress=progress, dry_run=True)
    assert f"cell 2/4 {NAMES[1]}: interrupted, resumes after round 1" in lines
    runner.calls.clear()
    runner.resumed.clear()
    assert run_sweep(tmp_path, GRID, ATTACK, runner=runner, progress=quiet()).ran == [NAMES[1]]
    assert runner.calls == [NAMES[1]] and runner.resumed == [True]
    assert (half / "kept.txt").exists()  # continued in place, not deleted
    assert json.loads((half / "summary.json").read_text())["config"]["resume"] is True
    # Reports tell cells apart by what they compute: a resumed cell is not a new series
    assert list(reports.read_csv(tmp_path / "sweep.csv")[0]) == [
        "cell", "num-attackers", "strategy", *reports.METRIC_COLUMNS]
    with pytest.raises(ConfigErrors, match="resumes interrupted cells itself"):
        run_sweep(tmp_path, GRID, {**ATTACK, "resume": True}, runner=runner, progress=quiet())


def test_a_key_added_to_the_app_after_a_run_counts_as_its_default(tmp_path, no_png):
    runner = FakeRunner()
    run_sweep(tmp_path, GRID, ATTACK, runner=runner, progress=quiet())
    summary_path = tmp_path / NAMES[0] / "summary.json"
    summary = json.loads(summary_path.read_text())
    del summary["config"]["multikrum-m"]  # as if the run predates the key (default 0)
    summary_path.write_text(json.dumps(summary))
    runner.calls.clear()
    assert run_sweep(tmp_path, GRID, ATTACK, runner=runner, progress=quiet()).skipped == NAMES
    with pytest.raises(SweepError, match=r"multikrum-m: 0 -> 2"):
        run_sweep(tmp_path, GRID, {**ATTACK, "multikrum-m": 2}, runner=runner,
                  progress=quiet())


def test_a_finished_cell_of_another_config_is_never_overwritten(tmp_path, no_png):
    runner = FakeRunner()
    run_sweep(tmp_path, GRID, ATTACK, runner=runner, progress=quiet())
    runner.calls.clear()
    with pytest.raises(SweepError, match=r"ipm-epsilon: 1.0 -> 0.5") as info:
        run_sweep(tmp_path, GRID, {**ATTACK, "ipm-epsilon": 0.5}, runner=runner,
                  progress=quiet())
    assert "another --out" in str(info.value)
    assert runner.calls == []


def test_a_failing_cell_is_reported_and_the_others_still_run(tmp_path, no_png):
    runner = FakeRunner(fail={NAMES[1]})
    result = run_sweep(tmp_path, GRID, ATTACK, runner=runner, progress=quiet())
    assert runner.calls == NAMES
    assert list(result.failed) == [NAMES[1]] and "boom" in result.failed[NAMES[1]]
    assert result.ran == [NAMES[0], *NAMES[2:]]
    rows = reports.read_csv(tmp_path / "sweep.csv")
    assert [r["cell"] for r in rows] == [NAMES[0], *NAMES[2:]]


def test_progress_shows_cell_k_of_n_round_r_of_r_and_accuracy(tmp_path, no_png, capsys):
    run_sweep(tmp_path, {"strategy": ["fedavg", "krum"]}, SMALL, runner=FakeRunner())
    lines = [line for line in capsys.readouterr().out.splitlines() if "[fl-sweep]" in line]
    assert "[fl-sweep] cell 1/2 strategy=fedavg: 2 rounds" in lines
    assert "[fl-sweep] cell 2/2 round 2/2: test accuracy 0.6000 (best 0.6000)" in lines
    run_sweep(tmp_path, {"strategy": ["fedavg", "krum"]}, SMALL, runner=FakeRunner())
    assert "cell 2/2 strategy=krum: skipped (finished earlier)" in capsys.readouterr().out


def test_the_live_display_runs_on_a_terminal(tmp_path, no_png):
    from rich.console import Console

    screen = io.StringIO()
    progress = sweep.RichProgress(2, Console(file=screen, force_terminal=True, width=100))
    run_sweep(tmp_path, {"strategy": ["fedavg", "krum"]}, SMALL, runner=FakeRunner(),
              progress=progress)
    assert "cell 2/2 strategy=krum: finished" in screen.getvalue()


def test_the_command_line(tmp_path, no_png, monkeypatch, capsys):
    runner = FakeRunner()
    monkeypatch.setattr("fl_app.experiments.sweep.runner.simulate_runner", lambda *a, **k: runner)
    out = tmp_path / "small"
    argv = ["--preset", "seed-krum-ipm-small", "--set", "num-server-rounds=2",
            "attack-start-round=2", "--grid", "num-attackers=1,3", "strategy=fedavg,krum",
            "--out", str(out)]
    assert main([*argv, "--dry-run"]) == 0 and not out.exists()
    assert main(argv) == 0
    assert runner.calls == NAMES
    assert json.loads((out / NAMES[0] / "summary.json").read_text())["config"]["dataset"] == \
        "digits"
    (out / "sweep.csv").unlink()
    assert main(["--report-only", "--out", str(out)]) == 0
    assert (out / "sweep.csv").is_file()
    assert main([*argv[:-2], "--grid", "strategy=bogus", "--out", str(out)]) == 2
    assert "'strategy'" in capsys.readouterr().err
    assert main(["--report-only", "--out", str(tmp_path / "empty")]) == 2


# ---------------------------------------------------------------------------- reports


def write_cell(out, name, overrides, accuracies, byzantine="", selected="", num_byz=0,
               epsilon=None, status="finished"):
    """A synthetic result folder: summary.json and rounds.csv as a run writes them."""
    folder = out / name
    folder.mkdir(parents=True)
    rows = []
    for rnd, acc in enumerate(accuracies):
        row = dict.fromkeys(ROUND_COLUMNS, "")
        row.update({"round": rnd, "test_accuracy": acc, "test_loss": 1.0, "train_loss": 1.0})
        if rnd:
            row.update({"sampled_clients": "0;1;2;3;4", "byzantine_clients": byzantine,
                        "selected_clients": selected, "num_selected_byzantine": num_byz,
                        "epsilon_max": "" if epsilon is None else epsilon * rnd})
        rows.append(row)
    with (folder / "rounds.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROUND_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    config = parse_run_config({**overrides, "output-dir": str(out), "run-name": name}).as_dict()
    (folder / "summary.json").write_text(json.dumps(
        {"status": status, "config": config, "seconds": 12.5,
         "final": {"final_test_accuracy": accuracies[-1]}}))
    return folder


def test_sweep_csv_and_plots_come_from_the_cell_folders(tmp_path):
    attack = {"attack": "ipm", "attack-knowledge": "omniscient", "num-byzantine": -1}
    for q in (1, 3):
        write_cell(tmp_path, f"num-attackers={q},strategy=krum",
                   {**attack, "strategy": "krum", "num-attackers": q}, [0.1, 0.5, 0.2],
                   byzantine="1;3", selected="3", num_byz=1)
        write_cell(tmp_path, f"num-attackers={q},strategy=fedavg",
                   {**attack, "strategy": "fedavg", "num-attackers": q}, [0.1, 0.6, 0.8],
                   byzantine="1;3", selected="0;1;2;3", num_byz=2)
    write_cell(tmp_path, "half", {"strategy": "krum"}, [0.1], status="running")
    written = reports.write_reports(tmp_path)
    assert [p.name for p in written] == ["sweep.csv", "accuracy_per_round.png",
                                         "accuracy_vs_attackers.png"]
    rows = reports.read_csv(tmp_path / "sweep.csv")
    assert list(rows[0]) == ["cell", "strategy", "num-attackers", *reports.METRIC_COLUMNS]
    by_cell = {r["cell"]: r for r in rows}
    assert "half" not in by_cell and len(rows) == 4
    krum = by_cell["num-attackers=3,strategy=krum"]
    assert (krum["final_test_accuracy"], krum["best_test_accuracy"]) == ("0.2", "0.5")
    assert krum["byzantine_selection_rate"] == "1.0"
    assert by_cell["num-attackers=1,strategy=fedavg"]["byzantine_selection_rate"] == "0.5"
    assert krum["final_epsilon_max"] == "" and krum["seconds"] == "12.5"
    for path in written[1:]:
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 10_000


def test_manifest_order_and_grid_columns_are_used_when_present(tmp_path):
    for name, strategy in (("b", "fedavg"), ("a", "krum")):
        write_cell(tmp_path, name, {"strategy": strategy}, [0.1, 0.5])
    (tmp_path / "sweep.json").write_text(json.dumps({"cells": [
        {"name": "b", "overrides": {"strategy": "fedavg", "seed": 0}},
        {"name": "a", "overrides": {"strategy": "krum", "seed": 0}}]}))
    reports.write_reports(tmp_path)
    rows = reports.read_csv(tmp_path / "sweep.csv")
    assert [r["cell"] for r in rows] == ["b", "a"]
    assert list(rows[0])[:3] == ["cell", "strategy", "seed"]


def test_dp_sweeps_get_an_accuracy_against_epsilon_plot(tmp_path):
    for sigma, eps in ((0.5, 4.0), (1.0, 1.5)):
        write_cell(tmp_path, f"s{sigma}", {"dp": True, "dp-noise-multiplier": sigma},
                   [0.1, 0.4, 0.6], epsilon=eps)
    write_cell(tmp_path, "nodp", {"dp": False}, [0.1, 0.7, 0.9])
    written = reports.write_reports(tmp_path)
    assert tmp_path / "accuracy_vs_dp_epsilon.png" in written
    rows = {r["cell"]: r for r in reports.read_csv(tmp_path / "sweep.csv")}
    assert rows["s0.5"]["final_epsilon_max"] == "8.0" and rows["nodp"]["final_epsilon_max"] == ""


def test_one_run_figures(tmp_path):
    run = write_cell(tmp_path, "run", {"strategy": "krum"}, [0.1, 0.5, 0.7], byzantine="3",
                     selected="3", num_byz=1, epsilon=0.5)
    with (run / "krum_scores.csv").open("w") as f:
        f.write("round,partition,score,selected\n1,3,0.5,1\n1,0,2.0,0\n2,3,0.4,1\n2,1,3.0,0\n")
    with (run / "clients.csv").open("w") as f:
        f.write("round,node,partition,examples,train_loss,epsilon,byzantine,trained,status\n"
                "1,11,0,100,1.0,0.5,0,1,\n2,11,0,100,1.0,1.0,0,1,\n1,12,3,100,1.0,-1,1,1,\n")
    for plot in (reports.plot_run_curves, reports.plot_krum_selection,
                 reports.plot_client_epsilon):
        fig = plot(run, tmp_path / f"{plot.__name__}.png")
        assert (tmp_path / f"{plot.__name__}.png").stat().st_size > 10_000
        assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    assert len(reports.plot_krum_selection(run).axes) == 2


# ---------------------------------------------------------------------------- one real sweep


@pytest.mark.usefixtures("shared_engine")
def test_a_real_sweep_runs_end_to_end_and_matches_a_direct_simulation(tmp_path_factory,
                                                                     tmp_path, capsys):
    """2 cells x 2 rounds on digits, through the command line; cell = simulate() of its config.

    These are the robustness notebook's smoke cells, in the folder tests/test_notebooks.py
    gives it (FL_NOTEBOOK_OUT), so whichever test runs second resumes instead of rerunning.
    The attackers are colluders: the omniscient hook corrupts the round's results by their
    arrival order, which differs between runs.
    """
    out = tmp_path_factory.getbasetemp() / "notebooks" / "robustness"
    argv = ["--preset", "seed-krum-ipm-small", "--set", "num-server-rounds=2",
            "attack-start-round=2", "num-attackers=2", "attack-knowledge=colluders",
            "--grid", "strategy=fedavg,krum", "--out", str(out)]
    assert main(argv) == 0
    cells, unfinished = reports.load_cells(out)
    assert [c.name for c in cells] == ["strategy=fedavg", "strategy=krum"] and not unfinished
    assert all(len(c.rounds) == 3 for c in cells)
    assert (out / "accuracy_per_round.png").is_file()
    rows = {r["cell"]: r for r in reports.read_csv(out / "sweep.csv")}
    assert float(rows["strategy=fedavg"]["byzantine_selection_rate"]) == pytest.approx(0.2)

    krum = cells[1]
    direct = simulate({**krum.summary["config"], "output-dir": str(tmp_path / "direct")},
                      num_supernodes=10)
    direct_rows = reports.read_csv(direct / "rounds.csv")
    # (not selected_clients: Krum ties between the colluders' identical vectors go to the
    # first to arrive; the update, and so the accuracy, is the same)
    for column in ("test_accuracy", "test_loss", "sampled_clients", "byzantine_clients",
                   "num_selected_byzantine"):
        assert [r[column] for r in direct_rows] == [r[column] for r in krum.rounds], column

    capsys.readouterr()
    assert main(argv) == 0  # resumes: nothing left to run
    assert capsys.readouterr().out.count("skipped (finished earlier)") == 2


# ---------------------------------------------------------------------------- --jobs


@pytest.mark.parametrize(("jobs", "env", "allowed"), [
    (0, {}, "an integer >= 1"), (10**6, {}, "at most"),
    (2, {"RAY_ADDRESS": "127.0.0.1:6379"}, "1 when RAY_ADDRESS names a Ray cluster")])
def test_a_bad_jobs_count_is_refused_before_anything_runs(tmp_path, monkeypatch, jobs, env,
                                                          allowed):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    runner = FakeRunner()
    with pytest.raises(ConfigError, match="'--jobs'") as info:
        run_sweep(tmp_path, GRID, ATTACK, runner=runner, progress=quiet(), jobs=jobs)
    assert allowed in str(info.value)
    assert not runner.calls and not any(tmp_path.iterdir())


def test_jobs_run_every_cell_in_worker_processes_and_report_a_failure(tmp_path, no_png):
    result = run_sweep(tmp_path, GRID, ATTACK, runner=FakeRunner(fail={NAMES[1]}),
                       progress=quiet(), jobs=2)
    assert list(result.failed) == [NAMES[1]] and "boom" in result.failed[NAMES[1]]
    assert sorted(result.ran) == sorted([NAMES[0], *NAMES[2:]])
    rows = reports.read_csv(tmp_path / "sweep.csv")
    assert [r["cell"] for r in rows] == [NAMES[0], *NAMES[2:]]  # the grid's order
    again = run_sweep(tmp_path, GRID, ATTACK, runner=FakeRunner(), progress=quiet(), jobs=2)
    assert sorted(again.skipped) == sorted([NAMES[0], *NAMES[2:]]) and again.ran == [NAMES[1]]


@pytest.mark.usefixtures("shared_engine")
def test_real_cells_in_two_jobs_equal_the_same_cells_run_one_by_one(tmp_path):
    grid = {"strategy": ["fedavg", "median"]}
    config = {**SMALL, "attack": "alie", "num-attackers": 2}
    parallel = run_sweep(tmp_path / "jobs", grid, config, progress=quiet(), jobs=2)
    serial = run_sweep(tmp_path / "one", grid, config, progress=quiet())
    assert not parallel.failed and sorted(parallel.ran) == serial.ran
    for name in serial.ran:
        got = reports.read_csv(tmp_path / "jobs" / name / "rounds.csv")
        want = reports.read_csv(tmp_path / "one" / name / "rounds.csv")
        for column in ("test_accuracy", "test_loss", "sampled_clients", "byzantine_clients"):
            assert [r[column] for r in got] == [r[column] for r in want], (name, column)


@pytest.mark.parametrize("moment", ["ray-starting", "cell-running"])
def test_killing_the_sweep_ends_its_jobs_and_their_ray(tmp_path, moment):
    """SIGTERM to fl-sweep alone: its job processes and their Ray instances end too.

    ``ray-starting``: as soon as a job's raylet shows up, inside ``ray.init``, where Ray's
    own SIGTERM handler is in place (it ends the raylet and leaves the agents behind);
    ``cell-running``: once both jobs are in their first cell.
    """
    started = tmp_path / "started"
    started.mkdir()
    code = ("import sys; from fl_app.experiments.sweep import run_sweep; "
            "from tests.fl_app.experiments.test_sweep import SlowRunner; "
            "run_sweep(sys.argv[1], {'seed': [0, 1, 2]}, {'num-server-rounds': 1}, "
            f"runner=SlowRunner({str(started)!r}), jobs=2)")

    def ready():
        if moment == "ray-starting":
            return any("raylet" in name for name in process_names(sweep_process))
        sweep_process.track()
        return len(list(started.iterdir())) == 2

    # every process the sweep starts inherits this: found even if it leaves the sweep's tree
    mark = f"FL_TEST_SWEEP={tmp_path}"
    processes = Processes(tmp_path, {**os.environ, "PYTHONPATH": str(REPO),
                                     "FL_TEST_SWEEP": str(tmp_path)})
    sweep_process = processes.start("sweep", [sys.executable, "-c", code, str(tmp_path / "s")])
    try:
        deadline = time.monotonic() + 180
        while not ready():
            assert sweep_process.returncode is None, sweep_process.log_tail()
            assert time.monotonic() < deadline, f"not {moment} after 180 s"
            time.sleep(0.1)
        sweep_process.track()
        os.kill(sweep_process.pid, signal.SIGTERM)  # the sweep only, not its process group
        deadline = time.monotonic() + 60
        while ((sweep_process.running() or processes_marked(mark))
               and time.monotonic() < deadline):
            time.sleep(0.5)
            sweep_process.track()
        left = sorted({p.pid for p in sweep_process.running()} | set(processes_marked(mark)))
        left = [f"{pid}: {name_of(pid)}" for pid in left]
    finally:
        processes.stop_all()
        for pid in processes_marked(mark):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not left, "\n".join(x[:150] for x in left)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only")
def test_a_job_whose_main_thread_cannot_take_the_sigterm_still_ends_with_the_sweep(tmp_path):
    # The main thread of a job can sit in a C++ call that never returns to Python (Ray's
    # GCS connect in ray.init, seen under load), so the SIGTERM its parent's death sends
    # is never handled: here every thread of the job blocks SIGTERM (blocked before any
    # thread starts, so all inherit it), and only the watching thread can end it.
    job = ("import os, signal, sys, time; "
           "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); "
           "from fl_app.experiments.sweep import parallel; "
           "parallel._die_with(int(sys.argv[1])); "
           "open(sys.argv[2], 'w').write(str(os.getpid())); time.sleep(300)")
    parent = ("import subprocess, sys, os, time; from pathlib import Path; "
              "ready = Path(sys.argv[1]); "
              f"subprocess.Popen([sys.executable, '-c', {job!r}, str(os.getpid()), str(ready)]); "
              "deadline = time.monotonic() + 60\n"
              "while not ready.exists() or not ready.read_text():\n"
              "    assert time.monotonic() < deadline; time.sleep(0.05)\n"
              "os._exit(0)")
    ready = tmp_path / "job.pid"
    subprocess.run([sys.executable, "-c", parent, str(ready)], check=True, timeout=90,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    job = proc_id(int(ready.read_text()))  # None: it has ended already
    deadline = time.monotonic() + 10
    while job is not None and is_running(job) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = job is not None and is_running(job)
    if alive:
        os.kill(job.pid, signal.SIGKILL)
    assert not alive, "the job outlived its parent by 10 s"


def processes_marked(mark):
    """Running processes whose environment holds ``mark`` (``KEY=value``), zombies aside."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            proc = proc_id(int(entry.name))
            if (proc is not None and is_running(proc)
                    and mark.encode() in (entry / "environ").read_bytes().split(b"\0")):
                found.append(proc.pid)
    return found


def process_names(service):
    """The command names of a service's running processes (tracked now)."""
    service.track()
    return [name_of(p.pid) for p in service.running()]


def name_of(pid):
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# ---------------------------------------------------------------------------- shared prefix


def test_which_cells_share_the_rounds_before_the_attack():
    from fl_app.experiments.sweep.prefix import prefix_key

    base = {"attack-start-round": 3, "num-server-rounds": 4, "num-attackers": 2}
    ipm = prefix_key({**base, "attack": "ipm", "ipm-epsilon": 0.5})
    assert ipm is not None
    assert prefix_key({**base, "attack": "gaussian", "gaussian-sigma": 2.0}) == ipm  # and params
    assert prefix_key({**base, "attack": "label-flip", "output-dir": "/x", "run-name": "y"}) == ipm
    for other in ({"num-attackers": 1}, {"attack-knowledge": "colluders"}, {"seed": 1},
                  {"attack-start-round": 2}, {"num-server-rounds": 5}, {"strategy": "median"}):
        assert prefix_key({**base, "attack": "ipm", **other}) != ipm, other
    assert prefix_key({**base, "attack": "backdoor"}) != ipm  # records backdoor accuracy
    assert prefix_key({**base, "attack": "none"}) is None
    assert prefix_key({**base, "attack": "ipm", "attack-start-round": 1}) is None


def test_cells_differing_only_in_the_attack_run_the_rounds_before_it_once(tmp_path):
    """Later cells start after round 2 from the first's checkpoint, with the results of alone."""
    config = {**SMALL, "num-server-rounds": 3, "attack-start-round": 3, "num-attackers": 2,
              "attack-knowledge": "colluders", "strategy": "centered-clipping"}
    grid = {"attack": ["ipm", "label-flip"]}  # an update attack and a data attack
    real, resumed, rows_seen = sweep.simulate_runner(), [], []

    def runner(run_config, num_supernodes, on_round):
        resumed.append(bool(run_config.get("resume")))
        return real(run_config, num_supernodes, lambda row: (rows_seen.append(row["round"]),
                                                             on_round(row)))

    with shared_ray():  # one Ray for both sweeps
        shared = run_sweep(tmp_path / "shared", grid, config, runner=runner, progress=quiet())
        alone = run_sweep(tmp_path / "alone", grid, config, progress=quiet(),
                          share_prefix=False)
    assert not shared.failed and resumed == [False, True]
    assert rows_seen == [0, 1, 2, 3, 3]  # rounds 0-2 ran once
    assert alone.ran == shared.ran and not list((tmp_path / "alone").glob(".prefixes"))

    def table(out, name, file, drop):
        rows = reports.read_csv(tmp_path / out / name / file)
        return sorted(tuple((k, v) for k, v in r.items() if k not in drop) for r in rows)

    for name in alone.ran:
        assert table("shared", name, "rounds.csv", {"seconds"}) == table(
            "alone", name, "rounds.csv", {"seconds"}), name
        assert table("shared", name, "clients.csv", {"node"}) == table(
            "alone", name, "clients.csv", {"node"}), name
        summary = json.loads((tmp_path / "shared" / name / "summary.json").read_text())
        assert summary["config"]["attack"] == name.split("=")[1]
