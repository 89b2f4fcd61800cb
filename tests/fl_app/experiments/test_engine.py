"""Flower's Simulation Engine in-process: the internals it relies on, Ray kept across runs."""

import csv
import inspect

import pytest
import ray
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.fleet.vce.backend import raybackend
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
from flwr.simulation.ray_transport.ray_actor import BasicActorPool

from fl_app.errors import ConfigErrors
from fl_app.experiments import engine
from fl_app.experiments.engine import FlowerRayBackend, SharedRayBackend, shared_ray
from fl_app.experiments.simulate import simulate

SMALL = {"num-server-rounds": 2, "fraction-fit": 1.0}
pytestmark = pytest.mark.own_ray  # runs alone must be alone: no shared Ray of other modules


def metrics(run_dir):
    """rounds.csv without the wall-clock column."""
    with open(run_dir / "rounds.csv") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_the_flower_internals_the_engine_relies_on_are_still_there():
    """Fails loudly on the Flower upgrade that moves them (then fix engine.py only)."""
    from flwr.simulation import run_simulation  # deprecated in 1.42: the in-process entry

    assert callable(run_simulation)
    # start_vce builds the backend through this module attribute, at call time
    source = inspect.getsource(vce_api.start_vce)
    assert "from .backend.raybackend import RayBackend" in source
    assert "RayBackend(backend_config)" in source
    for method in ("build", "terminate", "init_ray", "process_message"):
        assert callable(getattr(FlowerRayBackend, method))
    # the sampler's partition ids (fl_app.federation.sampling): node i of the simulation
    # is registered i-th with partition-id i, and the link state keeps registration order
    register = inspect.getsource(vce_api._register_nodes)
    assert "for i in range(num_nodes):" in register and "nodes_mapping[node_id] = i" in register
    assert "self.nodes: dict[int, NodeInfo] = {}" in inspect.getsource(InMemoryLinkState)
    # what reusing a pool reads: its idle actors and how many it made
    pool_source = inspect.getsource(BasicActorPool)
    assert "self.pool: list" in pool_source and "self.num_actors" in pool_source


def test_runs_in_a_session_share_ray_and_actors_and_match_a_run_alone(tmp_path):
    alone = simulate({**SMALL, "output-dir": str(tmp_path), "run-name": "alone"},
                     num_supernodes=4)
    assert not ray.is_initialized()  # Flower's own backend shut its Ray down
    with shared_ray():
        assert raybackend.RayBackend is SharedRayBackend
        simulate({**SMALL, "seed": 5, "output-dir": str(tmp_path), "run-name": "other"},
                 num_supernodes=4)
        pool = engine._kept["pool"]
        actors = sorted(a._actor_id.hex() for a in pool.pool)
        assert len(actors) == pool.num_actors >= 1
        again = simulate({**SMALL, "output-dir": str(tmp_path), "run-name": "again"},
                         num_supernodes=4)
        assert engine._kept["pool"] is pool  # the same actors served the third run
        assert sorted(a._actor_id.hex() for a in pool.pool) == actors
        assert ray.is_initialized()
    assert metrics(again) == metrics(alone)
    assert not ray.is_initialized() and not engine._kept
    assert raybackend.RayBackend is FlowerRayBackend


def test_a_run_that_fails_in_a_session_leaves_no_actor_to_the_next(tmp_path):
    with shared_ray():
        simulate({**SMALL, "output-dir": str(tmp_path), "run-name": "ok"}, num_supernodes=3)
        assert "pool" in engine._kept
        with pytest.raises(ConfigErrors, match="num-attackers"):
            simulate({**SMALL, "attack": "ipm", "num-attackers": 4,
                      "output-dir": str(tmp_path), "run-name": "bad"}, num_supernodes=3)
        assert not engine._kept  # killed: a failed run may have left one mid-task
        after = simulate({**SMALL, "output-dir": str(tmp_path), "run-name": "after"},
                         num_supernodes=3)
    assert metrics(after) == metrics(tmp_path / "ok")


def test_sessions_nest_and_the_outermost_owns_ray(tmp_path):
    with shared_ray():
        with shared_ray():
            simulate({**SMALL, "output-dir": str(tmp_path), "run-name": "inner"},
                     num_supernodes=2)
        assert ray.is_initialized() and "pool" in engine._kept
    assert not ray.is_initialized() and not engine._kept


def test_a_private_ray_instance_never_joins_a_cluster_it_was_not_told_of(monkeypatch):
    """ray.init() without an address joins the last `ray start` cluster: ours say 'local'."""
    from fl_app.experiments.engine import ray_init_args

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_init_args()["address"] == "local"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert "address" not in ray_init_args()  # Ray reads RAY_ADDRESS itself
