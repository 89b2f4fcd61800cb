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


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """The real CIFAR-10 (ImageFolder of JPEGs); required in CI, skipped only off-CI."""
    if not (CIFAR_DIR / "train").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the real CIFAR-10 at {CIFAR_DIR} (../shared/data)")
        pytest.skip(f"real CIFAR-10 not found at {CIFAR_DIR}")
    return CIFAR_DIR


@pytest.fixture(scope="module")
def shared_engine():
    """One Ray instance and its client actors for all of a module's simulations.

    Saves each run Ray's start and the actors' imports; a run in a session equals the
    same run alone (tests/fl_app/experiments/test_engine.py).
    """
    from fl_app.experiments.engine import shared_ray

    with shared_ray():
        yield
