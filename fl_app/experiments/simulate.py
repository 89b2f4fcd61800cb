"""Run a simulation in this process (notebooks, sweeps, tests) with Flower's Simulation Engine.

``flwr run`` is the way to run the app from a shell; this is the same ServerApp
and ClientApp started with Flower's Simulation Engine in this process
(:mod:`fl_app.experiments.engine`), with run-config overrides bound in, and the
result folder returned. Inside ``with shared_ray():`` consecutive runs share one
Ray instance and its actors (what ``fl-sweep`` does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fl_app.client_app import make_client_app
from fl_app.config import parse_run_config
from fl_app.experiments.engine import ray_init_args, run_in_process
from fl_app.learning.device import resolve_device, simulated_clients_device_error
from fl_app.runs.layout import read_summary
from fl_app.runs.recorder import resolve_run_dir
from fl_app.server_app import make_server_app

DEFAULT_CLIENT_CPUS = 1  # two 1-thread clients in parallel beat one 2-thread client on 2 cores


def backend_config(num_cpus_per_client: float = DEFAULT_CLIENT_CPUS,
                   num_gpus_per_client: float = 0.0) -> dict[str, Any]:
    """Ray backend settings: resources per client (what decides parallelism)."""
    return {"client_resources": {"num_cpus": num_cpus_per_client,
                                 "num_gpus": num_gpus_per_client},
            "init_args": ray_init_args()}


def simulate(overrides: Mapping[str, Any] | None = None, num_supernodes: int = 10,
             num_cpus_per_client: float = DEFAULT_CLIENT_CPUS, verbose: bool = False,
             on_round: Callable[[dict[str, Any]], None] | None = None,
             num_gpus_per_client: float = 0.0) -> Path:
    """Run one simulation with ``overrides`` of the run config; return its result folder.

    ``on_round`` is called in this process with every row written to rounds.csv
    (round 0 is the initial model), e.g. to drive a progress display. With
    ``RAY_ADDRESS`` set, the simulation joins that Ray cluster instead of starting one.
    """
    overrides = dict(overrides or {})
    cfg = parse_run_config(overrides, overrides)  # validates before Ray starts
    resolve_device(cfg.device)  # this process evaluates there
    unseen = simulated_clients_device_error(cfg.device, num_gpus_per_client)
    if unseen is not None:
        raise unseen
    run_dir = resolve_run_dir(cfg)
    overrides.update({"output-dir": str(run_dir.parent), "run-name": run_dir.name})
    run_in_process(make_server_app(overrides, on_round), make_client_app(overrides),
                   num_supernodes, backend_config(num_cpus_per_client, num_gpus_per_client),
                   verbose)
    summary = read_summary(run_dir)
    if summary["status"] != "finished":
        raise RuntimeError(f"the simulation did not finish ({summary['status']}: "
                           f"{summary.get('error', 'no error recorded')}); see {run_dir}")
    return run_dir
