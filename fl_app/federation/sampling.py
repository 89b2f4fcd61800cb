"""Seeded, reproducible client sampling for Flower's legacy server loop.

Flower's ``SimpleClientManager.sample`` draws with Python's global ``random``,
and simulated SuperNodes get random node ids each run, so the same seed would
not sample the same data twice. :class:`PartitionSampler` learns each client's
``partition-id`` once, orders clients by it and samples with a ``numpy`` generator
seeded by the run: the same config and seed then sample the same partitions in every
round.

How it learns the partition ids:

* simulated nodes: from the run's in-memory link state, without a message. Flower's
  Simulation Engine registers node ``i`` of ``num_supernodes`` with ``partition-id = i``
  (``vce_api._register_nodes``, in that order), and the link state keeps its nodes in
  registration order, so a node's position there is its partition id
  (:func:`fl_app.experiments.engine.simulated_partition_ids`, beside Flower's other
  simulation internals; checked against the ClientApps' own node configs in the tests).
  10,000 nodes cost a dictionary walk instead of 10,000 ClientApp messages.
* real devices: one ``get_properties`` call per client, in parallel (each device's
  partition is its own node config; nothing on the server knows it).
"""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from flwr.common import GetPropertiesIns
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.criterion import Criterion

from fl_app import keys

log = logging.getLogger(__name__)
PROPERTIES_TIMEOUT_S = 120.0


def is_simulated(proxy: ClientProxy) -> bool:
    """True for a client of Flower's Simulation Engine (in-memory grid), not a real device."""
    # An InMemoryGrid exists only once Flower's simulation has imported its module;
    # importing it here would cost every ServerApp about 1 s at start.
    module = sys.modules.get("flwr.superlink.grid.inmemory_grid")
    return module is not None and isinstance(getattr(proxy, "grid", None), module.InMemoryGrid)


def properties_of(proxies: list[ClientProxy]) -> list[dict]:
    """Each client's ``get_properties`` answer, asked in parallel (one message each)."""

    def ask(proxy: ClientProxy) -> dict:
        return dict(proxy.get_properties(GetPropertiesIns({}), timeout=PROPERTIES_TIMEOUT_S,
                                         group_id=0).properties)

    with ThreadPoolExecutor(max_workers=max(1, min(32, len(proxies)))) as pool:
        return list(pool.map(ask, proxies))


class PartitionSampler(SimpleClientManager):
    """A client manager that samples partitions with a seeded generator."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self._rng = np.random.default_rng(seed)
        self.partition_of: dict[str, int] = {}

    def get_state(self) -> dict:
        """The generator's state (JSON-serialisable), for a checkpoint."""
        return dict(self._rng.bit_generator.state)

    def set_state(self, state: dict) -> None:
        """Continue the draws of a checkpointed run (:meth:`get_state`)."""
        self._rng.bit_generator.state = state

    def _learn_partitions(self, proxies: list[ClientProxy]) -> None:
        unknown = [p for p in proxies if p.cid not in self.partition_of]
        if not unknown:
            return
        simulated = [p for p in unknown if is_simulated(p)]
        if simulated:
            from fl_app.experiments.engine import simulated_partition_ids

            ids = simulated_partition_ids(simulated[0].grid)
            for proxy in simulated:
                self.partition_of[proxy.cid] = ids[proxy.node_id]
            unknown = [p for p in unknown if p.cid not in self.partition_of]
            if not unknown:
                return

        for proxy, properties in zip(unknown, properties_of(unknown), strict=True):
            self.partition_of[proxy.cid] = int(properties.get(keys.PARTITION_ID, -1))

    def sample(self, num_clients: int, min_num_clients: int | None = None,
               criterion: Criterion | None = None) -> list[ClientProxy]:
        """Sample ``num_clients`` clients, the same ones for the same seed and round."""
        self.wait_for(min_num_clients if min_num_clients is not None else num_clients)
        proxies = [p for p in self.clients.values()
                   if criterion is None or criterion.select(p)]
        self._learn_partitions(proxies)
        # Partition id first; the node id breaks ties (e.g. real devices without one).
        proxies.sort(key=lambda p: (self.partition_of[p.cid], p.cid))
        if num_clients > len(proxies):
            log.info("sampling %d of %d available clients", len(proxies), num_clients)
            num_clients = len(proxies)
        chosen = self._rng.choice(len(proxies), size=num_clients, replace=False)
        return [proxies[i] for i in sorted(chosen)]
