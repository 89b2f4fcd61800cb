"""Real-device federation on loopback: Flower's Deployment Engine, over TLS, authenticated.

One ``flower-superlink`` and four ``flower-supernode`` processes on 127.0.0.1
(free ports), each SuperNode holding one partition through its node config and
one of them Byzantine through ``byzantine=true``; ``flwr run`` submits the app to
that SuperLink through a connection in a temporary ``FLWR_HOME``. Everything
speaks TLS with certificates made here (a CA and a server certificate for
127.0.0.1/localhost), and the SuperLink only admits SuperNodes whose public keys
were registered with ``flwr supernode register`` (``--enable-supernode-auth``).

The ServerApp and every ClientApp run as subprocesses started by Flower
(``--isolation subprocess``, the default) in this venv: the SuperLink is told
``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` and SuperNodes never install
dependencies unless ``--allow-runtime-dependency-installation`` is given, so both
import torch etc. from the installed environment and the app's code from the FAB
that ``flwr run`` built from this checkout.

Each ClientApp message starts a fresh ``flwr-clientapp`` process (imports torch,
Opacus, flwr-datasets: seconds of CPU each), so a round here costs far more than
in simulation; each run is kept to one round on the offline digits data.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from fl_app import keys
from fl_app.client_app import HonestClient
from fl_app.config import parse_run_config
from fl_app.server_app import initial_weights
from tests._pki import ServerPki, make_ca_and_server_cert, make_supernode_keys
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
CONNECTION = "loopback-tls"
NUM_NODES = 4
BYZANTINE_PARTITION = 3
CLI_TIMEOUT_S = 60
STARTUP_TIMEOUT_S = 120
RUN_TIMEOUT_S = 480  # a round takes ~1 min on 2 idle cores; far more when they are busy
REFUSAL_TIMEOUT_S = 60


@dataclass
class Federation:
    """A running SuperLink with its SuperNodes, and how to reach it with ``flwr``."""

    root: Path
    processes: Processes
    cli_env: dict[str, str]
    pki: ServerPki
    superlink: Service
    address: str
    node_ids: dict[int, int] = field(default_factory=dict)  # partition id -> node id

    def flwr(self, *args: str, timeout: float = CLI_TIMEOUT_S):
        """Run ``flwr <args>`` with this federation's FLWR_HOME; its CompletedProcess."""
        return run_cli([executable("flwr"), *args], self.cli_env, timeout, cwd=REPO)

    def flwr_json(self, *args: str) -> dict:
        """Run ``flwr <args> --format json`` and parse its answer."""
        res = self.flwr(*args, "--format", "json")
        assert res.returncode == 0, f"flwr {' '.join(args)} failed:\n{res.stdout}{res.stderr}"
        return json.loads(res.stdout[res.stdout.index("{"):])

    def register(self, name: str) -> tuple[Path, int]:
        """Make a SuperNode key pair, register its public key; (private key, node id)."""
        private, public = make_supernode_keys(self.root / "keys", name)
        answer = self.flwr_json("supernode", "register", str(public), CONNECTION)
        return private, int(answer["node-id"])

    def online_node_ids(self) -> set[int]:
        """Node ids the SuperLink reports online."""
        nodes = self.flwr_json("supernode", "list", CONNECTION)["nodes"]
        return {int(n["node-id"]) for n in nodes if n["status"] == "online"}

    def start_supernode(self, name: str, private_key: Path, node_config: str,
                        root_certificates: Path, *extra: str) -> Service:
        """Start a SuperNode (its own FLWR_HOME and Runtime API port) against the SuperLink."""
        home = self.root / "homes" / name
        home.mkdir(parents=True, exist_ok=True)
        return self.processes.start(name, [
            executable("flower-supernode"), "--superlink", self.address,
            "--root-certificates", str(root_certificates),
            "--auth-supernode-private-key", str(private_key),
            "--isolation", "subprocess", "--host", LOOPBACK, "--port", str(free_port()),
            "--node-config", node_config, *extra,
        ], cwd=home, env={"FLWR_HOME": str(home)})


def base_env(flwr_home: Path) -> dict[str, str]:
    """The environment of every Flower process here: offline, quiet, this venv first."""
    return {**os.environ, "FLWR_HOME": str(flwr_home),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_TELEMETRY_ENABLED": "0",
            "PYTHONUNBUFFERED": "1"}


def write_connection(flwr_home: Path, address: str, root_certificates: Path) -> None:
    """The Flower config (``$FLWR_HOME/config.toml``) with one TLS SuperLink connection."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "{address}"\n'
        f'root-certificates = "{root_certificates.resolve()}"\n')


def node_config(partition_id: int) -> str:
    """A SuperNode's node config; every node says whether it is Byzantine."""
    byzantine = "true" if partition_id == BYZANTINE_PARTITION else "false"
    return (f"partition-id={partition_id} num-partitions={NUM_NODES} "
            f"byzantine={byzantine}")


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """SuperLink + 4 authenticated SuperNodes over TLS; all stopped, by pid, afterwards."""
    root = tmp_path_factory.mktemp("deployment")
    pki = make_ca_and_server_cert(root / "pki", "fl_app test CA")
    port = free_port()
    address = f"{LOOPBACK}:{port}"
    cli_home = root / "homes" / "cli"
    write_connection(cli_home, address, pki.ca_cert)
    (root / "logs").mkdir()
    processes = Processes(root / "logs", base_env(cli_home))
    try:
        superlink_home = root / "homes" / "superlink"
        superlink_home.mkdir(parents=True)
        superlink = processes.start("superlink", [
            executable("flower-superlink"),
            "--ssl-ca-certfile", str(pki.ca_cert), "--ssl-certfile", str(pki.server_cert),
            "--ssl-keyfile", str(pki.server_key), "--host", LOOPBACK, "--port", str(port),
            "--enable-supernode-auth", "--disable-runtime-dependency-installation",
        ], cwd=superlink_home, env={"FLWR_HOME": str(superlink_home)})
        wait_until(lambda: port_open(port), STARTUP_TIMEOUT_S, f"the SuperLink on {address}",
                   while_alive=[superlink])
        fed = Federation(root, processes, base_env(cli_home), pki, superlink, address)
        with ThreadPoolExecutor(NUM_NODES) as pool:  # one `flwr` CLI call each
            keys = list(pool.map(fed.register, [f"supernode-{p}" for p in range(NUM_NODES)]))
        nodes = []
        for pid, (key, node_id) in enumerate(keys):
            fed.node_ids[pid] = node_id
            nodes.append(fed.start_supernode(f"supernode-{pid}", key, node_config(pid),
                                             pki.ca_cert))
        wait_until(lambda: set(fed.node_ids.values()) <= fed.online_node_ids(),
                   STARTUP_TIMEOUT_S, f"{NUM_NODES} SuperNodes online", interval=2.0,
                   while_alive=[superlink, *nodes])
        yield fed
    finally:
        processes.stop_all()
    leftovers = processes.leftovers()
    assert not leftovers, f"processes outlived the test: {leftovers}"


def flwr_run(fed: Federation, run_config: str) -> tuple[int, str]:
    """``flwr run`` this checkout on the federation and stream its logs to the end.

    Returns the run id and everything printed (the ServerApp's log included).
    """
    fed.processes.track()
    res = fed.flwr("run", str(REPO), CONNECTION, "--stream", "--run-config", run_config,
                   timeout=RUN_TIMEOUT_S)
    fed.processes.track()
    out = res.stdout + res.stderr
    started = re.search(r"Successfully started run (\d+)", out)
    assert res.returncode == 0 and started, f"flwr run failed:\n{out}\n{fed.processes.logs()}"
    run_id = int(started.group(1))
    # The stream ends when the run is marked finished, which can be before the
    # ServerApp's last log upload lands (a refusal at start then streams no error):
    # the whole log, read after the end, has every line.
    full_log = fed.flwr("log", str(run_id), CONNECTION, "--show")
    return run_id, out + full_log.stdout + full_log.stderr


def run_status(fed: Federation, run_id: int) -> str:
    """The run's status as ``flwr list`` reports it, e.g. ``finished:completed``."""
    runs = fed.flwr_json("list", CONNECTION, "--run-id", str(run_id))["runs"]
    return str(runs[0]["status"])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_federation_over_tls_records_the_byzantine_device(federation, tmp_path):
    """A round with every node sampled; the node config's Byzantine node is recorded."""
    run_id, out = flwr_run(federation, (
        f"num-server-rounds=1 fraction-fit=1.0 dataset='digits' attack='ipm' "
        f"num-attackers=1 attack-knowledge='own' output-dir='{tmp_path}' run-name='deployment'"))
    run_dir = tmp_path / "deployment"
    assert f"results will be written to {run_dir}" in out
    # Real devices: the ServerApp's federation check did not see a simulation.
    assert f"[fl_app] {NUM_NODES} nodes, {NUM_NODES} sampled per round" in out
    assert run_status(federation, run_id).startswith("finished:completed")

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished"
    rounds = read_csv(run_dir / "rounds.csv")
    assert [int(r["round"]) for r in rounds] == [0, 1]
    for row in rounds[1:]:
        assert int(row["num_clients"]) == NUM_NODES and int(row["num_failures"]) == 0
        assert row["sampled_clients"].split(";") == [str(p) for p in range(NUM_NODES)]
        assert row["byzantine_clients"].split(";") == [str(BYZANTINE_PARTITION)]
    clients = read_csv(run_dir / "clients.csv")
    assert len(clients) == NUM_NODES
    for row in clients:
        partition = int(row["partition"])
        # Each partition was trained by the SuperNode whose key was registered for it.
        assert int(row["node"]) == federation.node_ids[partition]
        assert int(row["byzantine"]) == (partition == BYZANTINE_PARTITION)


def refused_at_start(fed: Federation, tmp_path: Path, run_config: str, name: str,
                     *messages: str) -> Path:
    """Run ``run_config`` as ``name``: it must fail saying ``messages``; its folder."""
    run_id, out = flwr_run(fed, f"{run_config} output-dir='{tmp_path}' run-name='{name}'")
    for message in messages:
        assert message in out, out
    assert run_status(fed, run_id).startswith("finished:failed")
    summary = json.loads((tmp_path / name / "summary.json").read_text())
    assert summary["status"] != "finished"
    return tmp_path / name


def test_omniscient_attacker_is_refused_on_real_devices(federation, tmp_path):
    """The server-side omniscient hook is simulation-only: the run fails and says why."""
    refused_at_start(
        federation, tmp_path, "num-server-rounds=1 fraction-fit=1.0 attack='ipm' "
        "num-attackers=1 attack-knowledge='omniscient'", "omniscient",
        "config key 'attack-knowledge' = 'omniscient' is not allowed",
        "'own' or 'colluders' on real devices")


@pytest.mark.parametrize("case", ["certificate of another CA", "unregistered key"])
def test_untrusted_supernode_is_refused(federation, case):
    """A SuperNode that does not trust the SuperLink's CA, or whose key is unknown, is shut out.

    The first one holds a registered key, so only TLS can stop it; the second one
    trusts the right CA, so only SuperNode authentication can.
    """
    name = "wrong-ca" if case.startswith("certificate") else "unregistered"
    if name == "wrong-ca":
        other = make_ca_and_server_cert(federation.root / "other-pki", "another CA")
        key, node_id = federation.register(name)
        root_certificates, reason = other.ca_cert, "CERTIFICATE_VERIFY_FAILED"
    else:
        key, _ = make_supernode_keys(federation.root / "keys", name)
        node_id, root_certificates, reason = None, federation.pki.ca_cert, "activate SuperNode"
    node = federation.start_supernode(name, key, "partition-id=0 num-partitions=4",
                                      root_certificates, "--max-retries", "1",
                                      "--max-wait-time", "20")
    try:
        code = node.wait(REFUSAL_TIMEOUT_S)
        assert code is not None, f"the {case} SuperNode kept running:\n{node.log_tail()}"
        assert code != 0
        assert reason in node.log_text(), node.log_tail()
        online = federation.online_node_ids()
        assert online == set(federation.node_ids.values())  # the federation is unchanged
        assert node_id not in online
    finally:
        node.stop()
    assert not node.running()


def seeded_fedavg(cfg_overrides: dict) -> list:
    """The one-round FedAvg model the devices would send back if DP noise were seeded.

    What any party knowing the run config could compute: every partition's DP fit
    with the noise seeded by (seed, round, partition), averaged by example count.
    """
    cfg = parse_run_config(cfg_overrides)
    start = initial_weights(cfg)
    fits = [HonestClient(cfg, p, NUM_NODES, simulated=True).fit(start, {keys.SERVER_ROUND: 1})
            for p in range(NUM_NODES)]
    total = sum(n for _, n, _ in fits)
    return [w0 + sum(n * (w[i] - w0) for w, n, _ in fits) / total
            for i, w0 in enumerate(start)]


def test_dp_noise_on_devices_is_fresh_and_no_one_can_replay_it(federation, tmp_path):
    """Same run config twice: the devices' DP noise differs, and the run config does not give it.

    ``dp-noise-source`` is left at ``auto``: on real devices that is OS entropy.
    """
    dp = {"num-server-rounds": 1, "fraction-fit": 1.0, "dataset": "digits", "dp": True,
          "dp-noise-multiplier": 1.0}
    run_config = " ".join(f"{k}={json.dumps(v)}" for k, v in dp.items()).replace("True", "true")
    models = []
    for name in ("dp-a", "dp-b"):
        run_id, _ = flwr_run(federation, f"{run_config} output-dir='{tmp_path}' "
                                         f"run-name='{name}'")
        assert run_status(federation, run_id).startswith("finished:completed")
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["dp_noise_source"] == "os"
        assert summary["dp_noise_sources_seen"] == ["os"]
        clients = read_csv(tmp_path / name / "clients.csv")
        assert len(clients) == NUM_NODES and {c["noise_source"] for c in clients} == {"os"}
        assert all(float(c["epsilon"]) > 0 for c in clients)
        models.append(np.concatenate([t.numpy().ravel() for t in
                                      torch.load(tmp_path / name / "model.pt")]))
    replayed = np.concatenate([w.ravel() for w in seeded_fedavg(dp)])
    # The noise is ~1e-2 per coordinate here (lr 0.05, sigma C / B = 0.1, ~15 steps,
    # averaged over 4 clients); float rounding of a correct replay would be ~1e-7.
    replay_gaps = [np.abs(model - replayed).max() for model in models]
    assert min(replay_gaps) > 1e-3
    between_runs = np.abs(models[0] - models[1]).max()
    assert between_runs > 1e-3
    # the replay is the right computation but for the noise: as far off as the runs are
    assert max(replay_gaps) < 10 * between_runs


def test_seeded_dp_noise_is_refused_on_real_devices(federation, tmp_path):
    """``dp-noise-source='seeded'`` fails at start, naming the key; no client trains."""
    run_dir = refused_at_start(
        federation, tmp_path, "num-server-rounds=1 fraction-fit=1.0 dp=true "
        "dp-noise-source='seeded'", "seeded",
        "config key 'dp-noise-source' = 'seeded' is not allowed",
        "'auto' or 'os' on real devices")
    assert read_csv(run_dir / "clients.csv") == []
