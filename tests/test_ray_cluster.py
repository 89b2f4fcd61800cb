"""Simulation on an existing Ray cluster: a local Ray head on loopback, then runs attached to it.

Flower's Ray backend calls ``ray.init(**init_args)`` only when Ray is not yet
initialised in the process, and ``ray.init()`` without an address joins the
cluster named by ``RAY_ADDRESS``. So ``RAY_ADDRESS`` attaches both ways of
running to a cluster: :func:`fl_app.experiments.simulate.simulate` in this process, and
``flwr run`` through a SuperLink started with ``RAY_ADDRESS`` in its
environment (its ``flwr-simulation`` process inherits it). The cluster's
resources then decide parallelism: ``--num-cpus=2`` and 1 CPU per client give
two ClientApp actors.

The head is ``ray start --head --block``: it stays in the foreground, so it is
stopped by its process id (SIGTERM; Ray's reaper takes its daemons down with
it). ``ray stop`` is not used: it stops every Ray process on the machine,
including other people's.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from fl_app.experiments.simulate import simulate
from tests._processes import (
    BIN,
    LOOPBACK,
    PROCESSES,
    Processes,
    Service,
    executable,
    free_port,
    port_open,
    run_cli,
    wait_until,
)

pytestmark = [pytest.mark.skipif(sys.platform != "linux",
                                 reason="process trees are followed through /proc"),
              pytest.mark.own_ray,  # no shared Ray of other modules here
              pytest.mark.xdist_group(PROCESSES)]  # one worker: fixed ports, Ray heads

REPO = Path(__file__).resolve().parents[1]
HEAD_CPUS = 2
NUM_SUPERNODES = 4
STARTUP_TIMEOUT_S = 120
RUN_TIMEOUT_S = 300


@dataclass
class RayHead:
    """A running Ray head: its address, its temp dir and the services of this module."""

    address: str
    temp_dir: Path
    service: Service
    processes: Processes

    def drivers(self) -> set[int]:
        """Process ids of every driver that has connected to this cluster."""
        logs = self.temp_dir / "session_latest" / "logs"
        return {int(p.stem.rsplit("_", 1)[1]) for p in logs.glob("python-core-driver-*.log")}


def flower_env(tmp_path: Path) -> dict[str, str]:
    """Offline, quiet Flower with its own FLWR_HOME; this venv first on PATH."""
    return {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_TELEMETRY_ENABLED": "0",
            "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A one-node Ray cluster on 127.0.0.1 (2 CPUs, no dashboard), stopped by pid afterwards."""
    import ray

    if ray.is_initialized():  # begin from a known state: this process is not a driver yet
        ray.shutdown()
    root = tmp_path_factory.mktemp("ray-cluster")
    # Ray's socket paths must stay under 107 characters: a short temp dir of its own.
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    env = {k: v for k, v in flower_env(root).items() if k != "RAY_ADDRESS"}
    processes = Processes(root, env)
    port = free_port()
    try:
        head = processes.start("ray-head", [
            executable("ray"), "start", "--head", "--block",
            f"--node-ip-address={LOOPBACK}", f"--port={port}", f"--num-cpus={HEAD_CPUS}",
            "--num-gpus=0", "--disable-usage-stats", "--include-dashboard=false",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={temp_dir}",
        ])
        wait_until(lambda: port_open(port) and "Ray runtime started" in head.log_text(),
                   STARTUP_TIMEOUT_S, f"the Ray head on {LOOPBACK}:{port}",
                   while_alive=[head])
        yield RayHead(f"{LOOPBACK}:{port}", temp_dir, head, processes)
    finally:
        if ray.is_initialized():  # never stay attached to a cluster that is going away
            ray.shutdown()
        processes.stop_all()
        shutil.rmtree(temp_dir, ignore_errors=True)
    leftovers = processes.leftovers()
    assert not leftovers, f"processes outlived the test: {leftovers}"


def read_rounds(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "rounds.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_completed(run_dir: Path, rounds: int) -> None:
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    rows = read_rounds(run_dir)
    assert [int(r["round"]) for r in rows] == list(range(rounds + 1))
    assert all(int(r["num_clients"]) == NUM_SUPERNODES for r in rows[1:])


def test_simulate_runs_on_an_existing_ray_cluster(ray_head, tmp_path, monkeypatch, capsys):
    """``simulate()`` with ``RAY_ADDRESS`` set joins the cluster instead of starting Ray."""
    import ray

    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    run_dir = simulate({"num-server-rounds": 2, "fraction-fit": 1.0,
                        "output-dir": str(tmp_path), "run-name": "on-cluster"},
                       num_supernodes=NUM_SUPERNODES, num_cpus_per_client=1)
    assert_completed(run_dir, rounds=2)
    assert os.getpid() in ray_head.drivers()  # this process was a driver of that cluster
    assert not ray.is_initialized()  # and Flower disconnected it at the end
    out = capsys.readouterr().out
    assert f"[fl_app] {NUM_SUPERNODES} simulated nodes" in out  # is_simulated: in-memory grid
    assert ray_head.service.returncode is None  # the cluster outlives the run


def test_a_sweep_runs_its_cells_on_an_existing_ray_cluster(ray_head, tmp_path, monkeypatch):
    """``fl-sweep`` with ``RAY_ADDRESS`` joins the cluster once and keeps its actors there."""
    import ray

    from fl_app.experiments import engine
    from fl_app.experiments.sweep import main

    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    seen = []
    original = engine.SharedRayBackend.build

    def build(self, app_fn):  # which actors served each cell, on which cluster
        original(self, app_fn)
        seen.append((ray.get_runtime_context().gcs_address,
                     sorted(a._actor_id.hex() for a in self.pool.pool)))

    monkeypatch.setattr(engine.SharedRayBackend, "build", build)
    assert main(["--set", "num-server-rounds=1", "fraction-fit=1.0",
                 "--grid", "seed=0,1", "--num-supernodes", str(NUM_SUPERNODES),
                 "--out", str(tmp_path / "sweep")]) == 0
    for cell in ("seed=0", "seed=1"):
        assert_completed(tmp_path / "sweep" / cell, rounds=1)
    assert len(seen) == 2 and seen[0] == seen[1]  # the same actors served both cells
    assert seen[0][0].endswith(ray_head.address.rsplit(":", 1)[1])  # on the cluster
    assert len(seen[0][1]) == HEAD_CPUS  # one per cluster CPU
    assert os.getpid() in ray_head.drivers() and not ray.is_initialized()
    assert ray_head.service.returncode is None


def test_flwr_run_simulation_on_an_existing_ray_cluster(ray_head, tmp_path):
    """``flwr run`` through a simulation SuperLink started with ``RAY_ADDRESS`` joins it too."""
    env = flower_env(tmp_path)
    port = free_port()
    home = Path(env["FLWR_HOME"])
    home.mkdir()
    # Local-only: plain HTTP on loopback, for this test's throw-away SuperLink.
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "ray-sim"\n\n[superlink.ray-sim]\n'
        f'address = "{LOOPBACK}:{port}"\ninsecure = true\n')
    processes = Processes(tmp_path, env)
    drivers_before = ray_head.drivers()
    try:
        superlink = processes.start("superlink", [
            executable("flower-superlink"), "--simulation", "--insecure",
            "--host", LOOPBACK, "--port", str(port), "--disable-runtime-dependency-installation",
        ], cwd=tmp_path, env={"RAY_ADDRESS": ray_head.address})
        wait_until(lambda: port_open(port), STARTUP_TIMEOUT_S, "the simulation SuperLink",
                   while_alive=[superlink])
        res = run_cli([executable("flwr"), "run", str(REPO), "ray-sim", "--stream",
                       "--federation-config",
                       f"num-supernodes={NUM_SUPERNODES} client-resources-num-cpus=1",
                       "--run-config",
                       f"num-server-rounds=2 fraction-fit=1.0 output-dir='{tmp_path}' "
                       f"run-name='flwr-run-on-cluster'"],
                      env, RUN_TIMEOUT_S, cwd=REPO)
        processes.track()
        assert res.returncode == 0, res.stdout + res.stderr + processes.logs()
        assert_completed(tmp_path / "flwr-run-on-cluster", rounds=2)
        assert f"[fl_app] {NUM_SUPERNODES} simulated nodes" in res.stdout  # is_simulated
        # The SuperLink's flwr-simulation process was a new driver of the cluster.
        assert ray_head.drivers() - drivers_before - {os.getpid()}
        assert ray_head.service.returncode is None
    finally:
        processes.stop_all()
    leftovers = processes.leftovers()
    assert not leftovers, f"processes outlived the test: {leftovers}"
