"""Partition discovery: simulated nodes from the link state, devices by one message each."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
from flwr.common import Code, GetPropertiesRes, Status
from flwr.server.compat.grid_client_proxy import GridClientProxy

from fl_app import keys
from fl_app.experiments.simulate import simulate
from fl_app.federation.sampling import PartitionSampler


@pytest.mark.usefixtures("shared_engine")
def test_simulated_partitions_are_read_from_the_link_state_and_match_the_clients_own(
        tmp_path, monkeypatch):
    """Every sampled node's partition (server side) is the one its ClientApp trained on."""
    def no_message(*args, **kwargs):
        raise AssertionError("a simulated node was asked for its partition")

    monkeypatch.setattr(GridClientProxy, "get_properties", no_message)
    run = simulate({"num-server-rounds": 3, "fraction-fit": 0.25, "output-dir": str(tmp_path)},
                   num_supernodes=12)
    with open(run / "rounds.csv") as f:
        rounds = {int(r["round"]): r["sampled_clients"].split(";")
                  for r in csv.DictReader(f) if r["round"] != "0"}
    with open(run / "clients.csv") as f:
        clients = list(csv.DictReader(f))
    for number, sampled in rounds.items():
        trained = sorted((c["partition"] for c in clients if int(c["round"]) == number), key=int)
        assert len(sampled) == 3 and trained == sampled, number
    assert len({tuple(s) for s in rounds.values()}) > 1  # the draw changes between rounds


def test_devices_are_asked_once_each_for_their_partition():
    asked = []

    class Device:  # a real device's proxy: no in-memory grid
        def __init__(self, cid, partition):
            self.cid, self.partition, self.grid = cid, partition, SimpleNamespace()

        def get_properties(self, ins, timeout, group_id):
            asked.append(self.cid)
            return GetPropertiesRes(Status(Code.OK, ""), {keys.PARTITION_ID: self.partition})

    sampler = PartitionSampler(seed=0)
    for cid, partition in (("91", 2), ("17", 0), ("55", 1)):
        sampler.register(Device(cid, partition))
    chosen = sampler.sample(3)
    assert [p.cid for p in chosen] == ["17", "55", "91"]  # in partition order
    sampler.sample(2)
    assert sorted(asked) == ["17", "55", "91"]  # once each, not once a round
