"""Every command the README shows works: each shell or Python block runs here, or names its test.

The README's fenced ``bash`` and ``python`` blocks (in block quotes too) are read
from the file itself. Each one must match exactly one entry of :data:`DOCS`:

* :class:`Runs`: the block is executed, from the repository root, after a
  ``shrink`` that keeps its command as it is but makes it small (one or two
  rounds, fewer repeats, a real path for ``/path/to/cifar10-jpeg``), and its
  results are checked (``flwr run`` exits 0 even when a run fails, so every run
  it started must have written a ``finished`` summary.json);
* :class:`CoveredBy`: the block needs real devices, certificates handed out or a
  Ray cluster; the named tests run exactly that, and must exist.

A block with no entry, or an entry with no block, fails
:func:`test_every_readme_block_is_run_or_covered`: a new command cannot go untested.

The blocks run as a new user's would: ``HOME`` is a fresh folder (so ``~/fl-runs``
and ``~/fl-sweeps`` land there), ``flwr run .`` starts Flower's own managed local
SuperLink (on free ports, through ``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT`` and
``FLWR_LOCAL_CONTROL_API_PORT``, with ``FLWR_HOME`` in that folder), and that
SuperLink and everything it started are stopped by process id at the end.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._processes import (
    BIN,
    PROC,
    PROCESSES,
    ProcId,
    free_port,
    proc_id,
    send_signal,
    with_descendants,
)

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CIFAR_DIR = (REPO.parent / "shared" / "data" / "cifar10-jpeg").resolve()
FENCE = re.compile(r"^(?:> )?```(\w*)\s*$")
LANGUAGES = ("bash", "python")

pytestmark = [pytest.mark.skipif(sys.platform != "linux",
                                 reason="the managed SuperLink is found through /proc"),
              pytest.mark.own_ray,  # no shared Ray of other modules here
              pytest.mark.xdist_group(PROCESSES)]  # one worker: fixed ports, Ray heads


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Block:
    """A fenced code block of the README."""

    line: int  # of the opening fence
    language: str
    text: str


def readme_blocks() -> list[Block]:
    """The README's ``bash`` and ``python`` blocks, block-quote markers removed."""
    blocks, current, start, language = [], None, 0, ""
    for number, line in enumerate(README.read_text().splitlines(), 1):
        fence = FENCE.match(line)
        if fence and current is None:
            current, start, language = [], number, fence.group(1)
        elif fence:
            if language in LANGUAGES:
                blocks.append(Block(start, language, "\n".join(current) + "\n"))
            current = None
        elif current is not None:
            current.append(line[2:] if line.startswith("> ") else line)
    return blocks


# ------------------------------------------------------------------------------ running


@dataclass
class Outcome:
    """What running a block gave: its exit status, everything printed, the user's home."""

    returncode: int
    output: str
    home: Path


@dataclass(frozen=True)
class Runs:
    """Run the block after ``shrink``; ``check`` asserts on the :class:`Outcome`."""

    shrink: Callable[[str], str]
    check: Callable[[Outcome], None]
    timeout: int = 600


@dataclass(frozen=True)
class CoveredBy:
    """The block is what these tests (``path::function``) run; ``why`` not here."""

    tests: tuple[str, ...]
    why: str


def commands(text: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = text.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#[^'\"]*$", "", line).strip()  # a trailing comment
        if line and not line.startswith("#"):
            out.append(line)
    return out


def each_command(change: Callable[[str], str]) -> Callable[[str], str]:
    """A shrink applying ``change`` to every command of a block."""
    return lambda text: "\n".join(change(c) for c in commands(text)) + "\n"


def with_cifar(text: str) -> str:
    """The README's placeholder for the CIFAR-10 copy, made the real one."""
    return text.replace("/path/to/cifar10-jpeg", str(CIFAR_DIR))


def flwr_rounds(overrides: str) -> Callable[[str], str]:
    """Append ``--run-config "<overrides>"`` to every ``flwr run`` (a later value wins)."""
    def change(command: str) -> str:
        if " flwr run " in f" {command} ":
            return f'{with_cifar(command)} --run-config "{overrides}"'
        return command
    return each_command(change)


def append(args: str) -> Callable[[str], str]:
    """Append ``args`` to the block's one command."""
    return each_command(lambda command: f"{with_cifar(command)} {args}")


def replace(*pairs: tuple[str, str]) -> Callable[[str], str]:
    """Replace text in the block (a setting made small)."""
    def change(text: str) -> str:
        for old, new in pairs:
            assert old in text, f"the README block no longer contains {old!r}"
            text = text.replace(old, new)
        return with_cifar(text)
    return change


def finished_runs(outcome: Outcome, expected: int) -> list[dict]:
    """Every run folder the output names at its end; each summary.json must say finished."""
    assert outcome.returncode == 0, outcome.output[-6000:]
    dirs = re.findall(r"\[fl_app\] run finished; results in (\S+)", outcome.output)
    assert len(dirs) == expected, outcome.output[-6000:]
    summaries = [json.loads((Path(d) / "summary.json").read_text()) for d in dirs]
    assert [s["status"] for s in summaries] == ["finished"] * expected
    return summaries


def runs_finished(expected: int = 1) -> Callable[[Outcome], None]:
    return lambda outcome: finished_runs(outcome, expected)


def sweep_cells(out: str, expected: int) -> Callable[[Outcome], None]:
    """A sweep in ``~/<out>`` ran ``expected`` cells, every one finished (sweep.csv)."""
    def check(outcome: Outcome) -> None:
        assert outcome.returncode == 0, outcome.output[-6000:]
        with open(outcome.home / out / "sweep.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == expected, rows
        assert all(float(r["final_test_accuracy"]) >= 0 for r in rows)
    return check


def exits_zero(*needles: str) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        assert outcome.returncode == 0, outcome.output[-6000:]
        for needle in needles:
            assert needle in outcome.output, outcome.output[-6000:]
    return check


def seed_run_checks(outcome: Outcome) -> None:
    """The seed command: Krum with f = q = 5 on the real CIFAR-10, attacked in round 2."""
    (summary,) = finished_runs(outcome, 1)
    assert summary["config"]["preset"] == "seed-krum-ipm"
    assert summary["config"]["dataset"] == "cifar10"
    assert summary["config"]["data-dir"] == str(CIFAR_DIR)
    assert summary["config"]["strategy"] == "krum" and summary["config"]["num-attackers"] == 5
    assert summary["declared_byzantine"] == 5
    with open(Path(summary["run_dir"]) / "rounds.csv") as f:
        rounds = list(csv.DictReader(f))
    assert int(rounds[1]["num_clients"]) == 25
    assert len(rounds[2]["byzantine_clients"].split(";")) == 5  # the omniscient q of 25


def bench_round_checks(outcome: Outcome) -> None:
    # exit 1 only says the speed goal was missed on this (shared) machine
    assert outcome.returncode in (0, 1), outcome.output[-6000:]
    assert "x the floor: " in outcome.output, outcome.output[-6000:]


def resume_checks(outcome: Outcome) -> None:
    first, resumed = finished_runs(outcome, 2)
    assert first["run_dir"] == resumed["run_dir"]
    assert "(resuming after round 1)" in outcome.output


def certificates_made(outcome: Outcome) -> None:
    assert outcome.returncode == 0, outcome.output
    text = subprocess.run(["openssl", "x509", "-in", str(outcome.home / "server.pem"),
                           "-noout", "-text"], capture_output=True, text=True,
                          check=True).stdout
    assert "DNS:superlink.example.org" in text and "IP Address:10.0.0.5" in text


DEPLOYMENT = "tests/test_deployment.py::"
RAY = "tests/test_ray_cluster.py::"
DEVICES = ("a SuperLink and SuperNodes over TLS with SuperNode authentication: the "
           "deployment tests start exactly these on loopback, with free ports")

#: One entry per README block, keyed by a text only that block contains.
DOCS: dict[str, Runs | CoveredBy] = {
    # -- the two commands
    ".venv/bin/pip install -e . && . .venv/bin/activate": Runs(
        # the set-up half is what .ci/run does in a fresh venv; run the job itself
        lambda text: flwr_rounds("num-server-rounds=1")(text.split("&& ")[-1]),
        runs_finished()),
    '.venv/bin/pip install -q -e ".[dev]"': CoveredBy(
        (".ci/run",), "the test command: .ci/run runs exactly it, and this suite is it"),
    # -- usage
    "num-byzantine=2 attack='ipm' num-attackers=2": Runs(
        flwr_rounds("num-server-rounds=1"), runs_finished()),
    "flwr federation simulation-config @none/default": Runs(
        flwr_rounds("num-server-rounds=1"),  # 10 nodes, as every other block sets them
        exits_zero("Updated simulation configuration", "[fl_app] 10 simulated nodes")),
    "run-name='check-me'": Runs(flwr_rounds("num-server-rounds=1"),
                                exits_zero("Run ID", "finished \n")),  # flwr ls, then python
    "dataset='cifar10' data-dir='/path/to/cifar10-jpeg'": Runs(
        flwr_rounds("num-server-rounds=1 fraction-fit=0.05"), runs_finished()),  # 5 clients
    '"strategy": "krum", "num-byzantine": 1': Runs(
        replace(('"num-server-rounds": 10', '"num-server-rounds": 1')), runs_finished()),
    "preset='seed-krum-ipm' num-attackers=5": Runs(
        # attack-start-round=1 would be its default, ambiguous next to the preset
        flwr_rounds("num-server-rounds=2 attack-start-round=2"), seed_run_checks, 900),
    # -- robust aggregation
    'aggregate("bulyan", mixed, num_byzantine=2)': Runs(lambda text: text,
                                                        exits_zero("(1000,) (1000,)")),
    # -- sweeps
    "--grid dp=true dp-noise-multiplier=0.5,1.0,2.0": Runs(
        replace(("num-server-rounds=10", "num-server-rounds=1"),  # and 2 clients, not 10
                ("fraction-fit=0.2", "fraction-fit=0.04"),
                ("dp-noise-multiplier=0.5,1.0,2.0", "dp-noise-multiplier=1.0")),  # both grids
        sweep_cells("fl-sweeps/dp-cifar", 2), 900),
    "--preset seed-krum-ipm --set data-dir=": Runs(
        # 24 runs of 50 rounds on 100 nodes: every cell is planned and validated here
        append("--dry-run"), exits_zero("cell 24/24 num-attackers=0,attack=none,strategy=krum")),
    "--preset seed-krum-ipm-small": Runs(
        append("--set num-server-rounds=1 attack-start-round=1"),
        sweep_cells("fl-sweeps/seed-small", 8), 900),
    "--preset robustness-digits --num-supernodes 15 --jobs 2 --out ~/fl-sweeps/matrix ": Runs(
        append("--dry-run"), exits_zero("cell 1134/1134")),
    "--out ~/fl-sweeps/matrix-bucketing": Runs(append("--dry-run"), exits_zero("cell 126/126")),
    "--out ~/fl-sweeps/cifar-slice": Runs(append("--dry-run"), exits_zero("cell 32/32")),
    # -- audits
    "fl-audit canaries --set local-epochs=10": Runs(
        replace(("num-server-rounds=10", "num-server-rounds=1"),
                ("local-epochs=10", "local-epochs=1"),
                ("--batch-sizes 1 2", "--batch-sizes 1 --steps 50 --restarts 1")),
        exits_zero("epsilon >=", "PSNR")),
    "fl-audit tradeoff --jobs 2 --out ~/fl-audits/tradeoff-digits": Runs(
        replace(("--jobs 2 --out ~/fl-audits/tradeoff-digits",
                 "--set num-server-rounds=1 local-epochs=1 --levels central --noise-multipliers 1 "
                 "--out ~/fl-audits/tradeoff-digits"),
                ("--jobs 2 --out ~/fl-audits/tradeoff-cifar",  # 19 runs: planned, validated
                 "--dry-run --out ~/fl-audits/tradeoff-cifar")),
        exits_zero("| DP level |", "cell 19/19")),
    "fl-sweep --set tracker=mlflow": Runs(
        # the sweep; the extra is in the test environment already (.[dev] has both stores)
        lambda text: "\n".join(c.replace("num-server-rounds=5", "num-server-rounds=1")
                               for c in commands(text) if c.startswith("fl-sweep")) + "\n",
        sweep_cells("fl-sweeps/tracked", 2)),
    # -- crash and resume
    "run-name='exp1' resume=true": Runs(flwr_rounds("num-server-rounds=1"), resume_checks),
    # -- real devices
    "openssl req -x509": Runs(lambda text: text, certificates_made),
    "--enable-supernode-auth": CoveredBy(
        (f"{DEPLOYMENT}test_federation_over_tls_records_the_byzantine_device",), DEVICES),
    "flwr supernode register": CoveredBy(
        (f"{DEPLOYMENT}test_federation_over_tls_records_the_byzantine_device",
         f"{DEPLOYMENT}test_untrusted_supernode_is_refused"), DEVICES),
    "--auth-supernode-private-key supernode-0": CoveredBy(
        (f"{DEPLOYMENT}test_federation_over_tls_records_the_byzantine_device",), DEVICES),
    "flwr run . my-superlink": CoveredBy(
        (f"{DEPLOYMENT}test_federation_over_tls_records_the_byzantine_device",
         f"{DEPLOYMENT}test_dp_noise_on_devices_is_fresh_and_no_one_can_replay_it"), DEVICES),
    "flower-superlink --insecure &": CoveredBy(
        (f"{DEPLOYMENT}test_federation_over_tls_records_the_byzantine_device",),
        "the same Deployment Engine without TLS; the tests run it with TLS"),
    # -- Ray cluster
    "ray start --head": CoveredBy(
        (f"{RAY}test_simulate_runs_on_an_existing_ray_cluster",), "a Ray cluster"),
    "RAY_ADDRESS=127.0.0.1:6379 FLWR": CoveredBy(
        (f"{RAY}test_flwr_run_simulation_on_an_existing_ray_cluster",), "a Ray cluster"),
    'os.environ["RAY_ADDRESS"]': CoveredBy(
        (f"{RAY}test_simulate_runs_on_an_existing_ray_cluster",), "a Ray cluster"),
    "RAY_ADDRESS=127.0.0.1:6379 fl-sweep": CoveredBy(
        (f"{RAY}test_a_sweep_runs_its_cells_on_an_existing_ray_cluster",), "a Ray cluster"),
    # -- GPUs
    "--run-config \"device='cuda'\"": CoveredBy(
        ("tests/fl_app/learning/test_device.py::"
         "test_the_start_check_asks_the_clients_whether_they_see_the_cuda_device",
         "tests/fl_app/learning/test_device.py::"
         "test_a_client_trains_on_the_gpu_as_well_as_on_the_cpu"),
        "a GPU: this machine has none; the start check that refuses this command without "
        "one is tested"),
    # -- benchmarks
    "benchmarks/bench_krum.py": Runs(append("--sizes 25x62006 --repeats 1"),
                                     exits_zero("legacy yes")),
    "bench_dp.py --repeats 7": Runs(append("--repeats 1 --warmup 0 --threads 1"),
                                    exits_zero("bookkeeping/os")),
    "bench_dp.py --threads 1 --repeats 15": Runs(append("--repeats 1 --warmup 0"),
                                                 exits_zero("hooks/os")),
    "benchmarks/bench_rules.py": Runs(append("--n 25 --d 20000 --f 5 --repeats 1 --skip-slow"),
                                      exits_zero("geometric-median")),
    "benchmarks/bench_scale.py": Runs(  # on CIFAR-10 100 nodes, so 500 images each
        each_command(lambda c: f"{with_cifar(c)} --nodes {100 if 'cifar10' in c else 10} "
                               "--clients 5 --rounds 1"),
        exits_zero("accuracy")),
    "benchmarks/bench_shared_prefix.py": Runs(append("--rounds 2 --start 2 --attacks ipm alie"),
                                              exits_zero("identical: True")),
    "benchmarks/bench_gpu.py": Runs(append("--quick"), exits_zero("epoch, DP-SGD")),
    "benchmarks/bench_loaders.py": Runs(append("--per-class 10"),
                                        exits_zero("flwr-datasets", "next partition")),
    "benchmarks/bench_round.py": Runs(append("--dataset digits --rounds 2 --repeats 1 "
                                             "--skip flower-2cpu"),
                                      bench_round_checks),
}


def block_of(signature: str) -> Block:
    (block,) = [b for b in readme_blocks() if signature in b.text]
    return block


def test_every_readme_block_is_run_or_covered():
    """Each block matches exactly one entry, and each entry exactly one block."""
    blocks = readme_blocks()
    assert len(blocks) >= len(DOCS) > 0
    for block in blocks:
        matches = [s for s in DOCS if s in block.text]
        assert len(matches) == 1, (
            f"README line {block.line}: a {block.language} block matched by {matches}; give it "
            f"one entry in tests/test_readme.py DOCS (run it, or name its test):\n{block.text}")
    for signature in DOCS:
        found = [b.line for b in blocks if signature in b.text]
        assert len(found) == 1, f"DOCS entry {signature!r} matches README blocks {found}"


def test_covering_tests_exist():
    for signature, entry in DOCS.items():
        if not isinstance(entry, CoveredBy):
            continue
        for test in entry.tests:
            if test == ".ci/run":
                ci = (REPO / ".ci" / "run").read_text()
                assert block_of(signature).text.strip() in ci
                continue
            path, _, name = test.partition("::")
            tree = ast.parse((REPO / path).read_text())
            names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            assert name in names, f"{signature!r} is said to be covered by {test}: not found"


# ------------------------------------------------------------------------ the user's shell


def managed_superlinks(port: int) -> list[ProcId]:
    """The ``flower-superlink`` processes listening on ``port`` (started by ``flwr``)."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"flower-superlink" in a for a in argv[:2]) and str(port).encode() in argv:
            proc = proc_id(int(entry.name))
            if proc is not None:
                found.append(proc)
    return found


@pytest.fixture(scope="module")
def user_home(tmp_path_factory, cifar_dir):
    """A new user's home and environment; the managed SuperLink stopped by pid afterwards."""
    home = tmp_path_factory.mktemp("home")
    http_port, control_port = free_port(), free_port()
    env = {**os.environ, "HOME": str(home), "FLWR_HOME": str(home / ".flwr"),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "VIRTUAL_ENV": str(BIN.parent),
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port),
           "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
           # The README says to set it for the first `flwr run`, which starts the
           # SuperLink; set here, the blocks may run in any order.
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_TELEMETRY_ENABLED": "0",
           "PYTHONUNBUFFERED": "1"}
    assert not managed_superlinks(http_port)
    try:
        yield home, env
    finally:
        procs = with_descendants(managed_superlinks(http_port))
        for proc in procs:
            send_signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while with_descendants(procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        for proc in with_descendants(procs):
            send_signal(proc, signal.SIGKILL)
    assert not with_descendants(procs), "the managed SuperLink outlived the docs test"


RUNNABLE = [s for s, entry in DOCS.items() if isinstance(entry, Runs)]


@pytest.mark.parametrize("signature", RUNNABLE)
def test_readme_block_runs(signature, user_home):
    home, env = user_home
    entry = DOCS[signature]
    assert isinstance(entry, Runs)
    block = block_of(signature)
    code = entry.shrink(block.text)
    if block.language == "python":  # in-process: the ServerApp's log is this output
        argv = [sys.executable, "-c", code]
    else:
        argv = ["bash", "-eo", "pipefail", "-c", code]
    cwd = home if signature.startswith("openssl") else REPO
    try:
        res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                             timeout=entry.timeout, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"README line {block.line} ran past {entry.timeout} s:\n{code}\n"
                    f"{(exc.stdout or '')[-4000:]}")
    entry.check(Outcome(res.returncode, res.stdout + res.stderr, home))
