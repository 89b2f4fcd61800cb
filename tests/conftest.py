"""Shared fixtures: the real CIFAR-10 copy, and offline hub access."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CIFAR_DIR = (REPO.parent / "shared" / "data" / "cifar10-jpeg").resolve()

# Tests never reach the network: a hub lookup must fail fast, not hang on retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _share_the_cores_between_workers() -> None:
    """Give torch in each pytest-xdist worker its share of the cores, not all of them.

    Two workers on 2 cores with torch's default (a thread per core each) run 4 compute
    threads on 2 cores, and torch's OpenMP threads spin while they wait for each other:
    the gradient-inversion tests took 77-79 s each beside each other, 4-15 s alone.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


_share_the_cores_between_workers()


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """The real CIFAR-10 (ImageFolder of JPEGs); required in CI, skipped only off-CI."""
    if not (CIFAR_DIR / "train").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the real CIFAR-10 at {CIFAR_DIR} (../shared/data)")
        pytest.skip(f"real CIFAR-10 not found at {CIFAR_DIR}")
    return CIFAR_DIR


_engine_open = False  # whether this pytest process holds a shared Ray session


def _close_engine() -> None:
    global _engine_open
    if _engine_open:
        from fl_app.experiments.engine import close_session

        close_session()
        _engine_open = False


@pytest.fixture(scope="module")
def shared_engine():
    """One Ray instance and its client actors for the simulations of every module that asks.

    Opened by the first module that uses it and kept for the next ones (Ray's start and
    the actors' imports cost 10-25 s on 2 cores); a run in a session equals the same
    run alone (tests/fl_app/experiments/test_engine.py). Closed before a module marked
    ``own_ray`` and at the end of the session.
    """
    global _engine_open
    if not _engine_open:
        from fl_app.experiments.engine import open_session

        open_session()
        _engine_open = True
    yield


@pytest.fixture(scope="module", autouse=True)
def _own_ray_alone(request):
    """A module marked ``own_ray`` runs with no shared Ray in this process."""
    if request.node.get_closest_marker("own_ray") is not None:
        _close_engine()
    yield


@pytest.fixture(scope="session", autouse=True)
def _shared_engine_closed_at_the_end():
    yield
    _close_engine()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the modules of the ``processes`` xdist group first (a stable sort).

    They run in one worker, one after the other, and take about half the suite's time;
    queued first, they start at once and the other worker takes everything else.
    """
    from tests._processes import PROCESSES

    def in_group(item: pytest.Item) -> bool:
        return any(m.args == (PROCESSES,) for m in item.iter_markers("xdist_group"))

    items.sort(key=lambda item: not in_group(item))
