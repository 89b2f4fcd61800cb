"""Flower's Simulation Engine in this process, with one Ray instance kept across runs.

This is the one module that reaches into Flower's simulation internals, so that a
Flower upgrade breaks here, loudly (``tests/fl_app/experiments/test_engine.py``),
and nowhere else:

* :func:`run_in_process` calls ``flwr.simulation.run_simulation``, which Flower
  1.42 marks deprecated; it is the only in-process entry point 1.42 offers.
* :func:`simulated_partition_ids` reads each simulated node's partition id from the
  run's in-memory link state: Flower registers node ``i`` with ``partition-id = i``, in
  that order, and the link state keeps its nodes in registration order.
* :func:`shared_ray` keeps Ray and the client actors alive from one run to the
  next. Flower's ``RayBackend`` starts Ray, creates one actor per client slot and,
  when the run ends, kills them and shuts Ray down, so every run pays Ray's start
  and each actor's import of torch and this app (about 15 s of a 25 s digits run
  on 2 cores). Inside ``with shared_ray():`` the first run does that once; later
  runs reuse the same actors, whose per-process caches (decoded partitions, test
  sets) then serve every run. Nothing else is shared: each run builds its own
  ServerApp, ClientApp, node registry and link state, and every random draw of a
  run is seeded by its own config, so a run inside the session gives the same
  rounds.csv as a run on its own (tested).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import ray
from flwr.server.superlink.fleet.vce.backend import raybackend
from flwr.simulation import run_simulation

FlowerRayBackend = raybackend.RayBackend

_lock = threading.Lock()
_kept: dict[str, Any] = {}  # "pool" and "resources" while a session holds actors
_sessions = 0


def _discard_actors() -> None:
    """Kill the kept actors (the next run of the session creates new ones)."""
    pool = _kept.pop("pool", None)
    _kept.pop("resources", None)
    if pool is not None:
        for actor in pool.pool:
            ray.kill(actor)


def _all_idle_and_alive(pool: Any) -> bool:
    """Whether every actor is back in the pool and still answers.

    A crashed run can leave a busy or dead actor, which must not serve the next run.
    """
    if len(pool.pool) != pool.num_actors:
        return False
    try:
        ray.get([actor.__ray_ready__.remote() for actor in pool.pool], timeout=30)
    except Exception:  # a dead actor raises RayActorError; any failure means: rebuild
        return False
    return True


class SharedRayBackend(FlowerRayBackend):
    """Flower's ``RayBackend``, but the actors and Ray outlive the run.

    ``__init__`` already skips ``ray.init`` when Ray is up (Flower's own check), so
    only building and terminating the actor pool change.
    """

    def build(self, app_fn: Any) -> None:
        """Reuse the session's actors when they were made with these client resources."""
        with _lock:
            if _kept.get("resources") == self.client_resources and "pool" in _kept:
                self.pool = _kept["pool"]
                self.app_fn = app_fn
                return
            _discard_actors()
            super().build(app_fn)
            _kept.update(pool=self.pool, resources=dict(self.client_resources))

    def terminate(self) -> None:
        """Keep the actors for the next run, unless this run left one busy or dead."""
        with _lock:
            if self.pool is not None and not _all_idle_and_alive(self.pool):
                _discard_actors()


# Ray's own settings for a private instance (what the backend config's init_args carry)
RAY_INIT_ARGS = {"logging_level": "ERROR", "log_to_driver": True, "include_dashboard": False,
                 # left alone, Ray binds the machine's interface address; stay on loopback
                 "_node_ip_address": "127.0.0.1"}


def ray_init_args() -> dict[str, Any]:
    """:data:`RAY_INIT_ARGS`, plus ``address='local'`` unless ``RAY_ADDRESS`` names a cluster.

    Without an address, ``ray.init()`` joins the cluster a ``ray start`` on this machine
    last started (``/tmp/ray/ray_current_cluster``), if any: a simulation would silently
    train on someone else's cluster. A cluster is joined only when ``RAY_ADDRESS`` says so.
    """
    return {**RAY_INIT_ARGS, **({} if os.environ.get("RAY_ADDRESS") else {"address": "local"})}


def open_session(num_cpus: int | None = None) -> None:
    """Start sharing Ray and its actors between runs (see :func:`shared_ray`).

    ``num_cpus`` caps a private Ray instance started here (one job of
    ``fl-sweep --jobs``); without it, the first run starts Ray as it would alone.
    """
    global _sessions
    with _lock:
        _sessions += 1
        raybackend.RayBackend = SharedRayBackend
        if num_cpus is not None and not ray.is_initialized():
            ray.init(num_cpus=num_cpus, **ray_init_args())


def close_session() -> None:
    """End the session :func:`open_session` began (the outermost one ends Ray).

    The outermost session kills the kept actors and shuts Ray down.
    """
    global _sessions
    with _lock:
        _sessions = max(_sessions - 1, 0)
        if _sessions == 0:
            raybackend.RayBackend = FlowerRayBackend
            _discard_actors()
            if ray.is_initialized():
                ray.shutdown()


@contextlib.contextmanager
def shared_ray(num_cpus: int | None = None) -> Iterator[None]:
    """Share one Ray instance and its client actors between the runs in this block.

    Every :func:`run_in_process` inside uses them; on leaving the block, the actors
    are killed and Ray is shut down.
    Nesting is allowed (the outermost block owns Ray). Runs must be sequential: Flower's
    engine is not made for two runs at once in one process (``fl-sweep --jobs`` uses
    one process per job).
    """
    open_session(num_cpus)
    try:
        yield
    finally:
        close_session()


def run_in_process(server_app: Any, client_app: Any, num_supernodes: int,
                   backend_config: Mapping[str, Any], verbose: bool = False) -> None:
    """Run one simulation with Flower's Simulation Engine in this process."""
    try:
        run_simulation(server_app=server_app, client_app=client_app,
                       num_supernodes=num_supernodes, backend_config=dict(backend_config),
                       verbose_logging=verbose)
    except BaseException:
        with _lock:  # a run that raised may have left actors mid-task
            _discard_actors()
        raise


def simulated_partition_ids(grid: Any) -> dict[int, int]:
    """Node id -> partition id of every node of the simulation behind ``grid``.

    ``grid`` is the run's ``InMemoryGrid``: its ``state`` is the in-memory link state,
    whose ``nodes`` dict is in registration order, and ``vce_api._register_nodes``
    registers node ``i`` with partition id ``i`` (both checked in the tests).
    """
    return {node_id: position for position, node_id in enumerate(grid.state.nodes)}
