"""Where DP randomness comes from: seeded only in simulation, OS entropy on devices."""

from __future__ import annotations

import csv
import json
import sys
import types

import numpy as np
import pytest
import torch
from opacus.optimizers.optimizer import _generate_noise

from fl_app import client_app, keys
from fl_app.client_app import HonestClient
from fl_app.config import parse_run_config
from fl_app.errors import ConfigError, ConfigErrors
from fl_app.experiments.simulate import simulate
from fl_app.federation.checks import check_federation
from fl_app.privacy import DPSettings, new_accountant, train_private
from fl_app.privacy import randomness as dp_randomness
from fl_app.privacy.randomness import (
    MT_STATE_WORDS,
    SecureModeUnavailableError,
    os_generator,
    resolve_noise_source,
)
from fl_app.server_app import initial_weights
from fl_app.task import TrainSettings

N = 10
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def dp_cfg(**kw):
    return parse_run_config({"dp": True, "dp-noise-multiplier": 1.1, **kw})


def fixed_entropy(monkeypatch, value: int = 1) -> list[int]:
    """Make the OS entropy source return ``value``-seeded bytes; return the sizes asked for."""
    asked: list[int] = []

    def entropy(num_bytes: int) -> bytes:
        asked.append(num_bytes)
        return np.random.default_rng(value).bytes(num_bytes)

    monkeypatch.setattr(dp_randomness, "os_entropy", entropy)
    return asked


def fit_weights(client: HonestClient, rnd: int = 1) -> list[np.ndarray]:
    weights, _, metrics = client.fit(initial_weights(client.cfg), {keys.SERVER_ROUND: rnd})
    return weights, metrics


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------- the OS source


def test_os_generator_is_mt19937_keyed_by_os_bytes(monkeypatch):
    """The whole 624-word state is the OS bytes: the stream is numpy's MT19937 of that key."""
    asked = fixed_entropy(monkeypatch, 7)
    generator = os_generator()
    assert asked == [MT_STATE_WORDS * 4]  # 19,968 bits, far over 128
    words = np.frombuffer(np.random.default_rng(7).bytes(MT_STATE_WORDS * 4), dtype=np.uint32)
    reference = np.random.MT19937()
    reference.state = {"bit_generator": "MT19937",
                       "state": {"key": words.copy(), "pos": MT_STATE_WORDS}}
    raw = reference.random_raw(8)
    # torch draws 64 bits from two consecutive 32-bit outputs; [0, 2^32) keeps the second
    drawn = torch.empty(4, dtype=torch.int64).random_(0, 2**32, generator=generator)
    assert drawn.tolist() == raw[1::2].tolist()
    assert generator.initial_seed() == 0  # no seed made this state


def test_os_generator_is_fresh_each_call():
    a, b = os_generator(), os_generator()
    assert not torch.equal(torch.rand(16, generator=a), torch.rand(16, generator=b))


@pytest.mark.parametrize(("requested", "simulated", "secure", "expected"), [
    ("auto", True, False, "seeded"), ("auto", False, False, "os"),
    ("seeded", True, False, "seeded"), ("os", True, False, "os"), ("os", False, False, "os"),
    ("auto", True, True, "csprng"), ("os", False, True, "csprng"),
])
def test_resolve_noise_source(requested, simulated, secure, expected):
    assert resolve_noise_source(requested, simulated, secure) == expected


@pytest.mark.parametrize(("requested", "simulated", "secure", "key"), [
    ("seeded", False, False, "dp-noise-source"),
    ("seeded", True, True, "dp-secure-mode"),
    ("urandom", True, False, "dp-noise-source"),
])
def test_bad_noise_source_names_the_key(requested, simulated, secure, key):
    with pytest.raises(ConfigError) as info:
        resolve_noise_source(requested, simulated, secure)
    assert info.value.key == key


def test_bad_noise_source_is_a_config_error_at_parse():
    with pytest.raises(ConfigErrors) as info:
        parse_run_config({"dp-noise-source": "urandom"})
    assert "'dp-noise-source' = 'urandom'" in str(info.value)
    assert "['auto', 'seeded', 'os']" in str(info.value)
    with pytest.raises(ConfigErrors, match="dp-secure-mode"):
        parse_run_config({"dp-noise-source": "seeded", "dp-secure-mode": True})


def test_not_a_simulation_outside_ray_actors():
    assert dp_randomness.running_in_simulation() is False


# ---------------------------------------------------------------- the device client


def test_device_client_draws_from_os_entropy_and_ignores_the_seed(monkeypatch):
    """On a device the seed derived from the run config changes nothing; the entropy does."""
    cfg = dp_cfg()
    asked = fixed_entropy(monkeypatch, 1)
    device, metrics = fit_weights(HonestClient(cfg, 3, N))  # simulated defaults to False
    assert metrics[keys.DP_NOISE_SOURCE] == "os" and asked == [MT_STATE_WORDS * 4]
    monkeypatch.setattr(client_app, "derived_seed", lambda *parts: 12345)
    assert same(fit_weights(HonestClient(cfg, 3, N))[0], device)  # another run seed: same
    fixed_entropy(monkeypatch, 2)
    assert not same(fit_weights(HonestClient(cfg, 3, N))[0], device)  # other entropy: differs


def test_simulated_client_is_seeded_by_the_run(monkeypatch):
    """The positive control of the test above: in simulation the seed decides."""
    cfg = dp_cfg()
    asked = fixed_entropy(monkeypatch, 1)
    seeded, metrics = fit_weights(HonestClient(cfg, 3, N, simulated=True))
    assert metrics[keys.DP_NOISE_SOURCE] == "seeded" and asked == []
    assert same(fit_weights(HonestClient(cfg, 3, N, simulated=True))[0], seeded)
    monkeypatch.setattr(client_app, "derived_seed", lambda *parts: 12345)
    assert not same(fit_weights(HonestClient(cfg, 3, N, simulated=True))[0], seeded)


def test_device_client_refuses_seeded_noise_whatever_the_server_checked():
    client = HonestClient(dp_cfg(**{"dp-noise-source": "seeded"}), 0, N)
    with pytest.raises(ConfigError) as info:
        fit_weights(client)
    assert info.value.key == "dp-noise-source"
    assert keys.DP_ACCOUNTANT_STATE not in client.state  # nothing trained, nothing charged


def test_seeded_noise_is_refused_at_start_on_devices():
    cfg = dp_cfg(**{"dp-noise-source": "seeded"})
    with pytest.raises(ConfigErrors) as info:
        check_federation(cfg, N, False)
    assert "'dp-noise-source' = 'seeded' is not allowed" in str(info.value)
    check_federation(cfg, N, True)  # a simulation may
    check_federation(dp_cfg(**{"dp-noise-source": "os"}), N, False)


# ---------------------------------------------------------------------- secure mode


def test_secure_mode_without_torchcsprng_is_refused_precisely():
    assert "torchcsprng" not in sys.modules
    cfg = dp_cfg(**{"dp-secure-mode": True})
    with pytest.raises(ConfigErrors) as info:
        check_federation(cfg, N, True)
    message = str(info.value)
    assert "'dp-secure-mode' = True" in message and "torchcsprng" in message
    assert f"Python {sys.version_info.major}.{sys.version_info.minor}" in message
    with pytest.raises(SecureModeUnavailableError, match="torchcsprng"):
        fit_weights(HonestClient(cfg, 0, N))


@pytest.fixture
def fake_torchcsprng(monkeypatch):
    """A stand-in for torchcsprng whose generator is seeded, to check the wiring exactly."""
    made: list[str] = []

    def create_random_device_generator(path: str) -> torch.Generator:
        made.append(path)
        return torch.Generator().manual_seed(99)

    module = types.SimpleNamespace(create_random_device_generator=create_random_device_generator)
    monkeypatch.setitem(sys.modules, "torchcsprng", module)
    return made


def test_secure_mode_draws_opacus_secure_noise_from_the_csprng(fake_torchcsprng):
    # sigma * C = 1 while the clipped gradients have norm <= 1e-6: the update is the noise.
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    torch.manual_seed(0)
    model = client_app.build_run_model(dp_cfg())
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    settings = TrainSettings(local_epochs=1, batch_size=8, learning_rate=1.0, momentum=0.0)
    dp = DPSettings(noise_multiplier=1e6, max_grad_norm=1e-6, secure_mode=True)
    train_private(model, x, y, settings, dp, new_accountant("rdp"),
                  dp_randomness.secure_generator())
    assert fake_torchcsprng == ["/dev/urandom"]
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    reference = torch.Generator().manual_seed(99)
    torch.rand(8, generator=reference)  # the Poisson mask comes first
    noise = _generate_noise(1.0, before, reference, secure_mode=True)
    torch.testing.assert_close(after - before, -noise / 8, rtol=0, atol=1e-5)


def test_secure_mode_client_reports_csprng(fake_torchcsprng):
    _, metrics = fit_weights(HonestClient(dp_cfg(**{"dp-secure-mode": True}), 0, N))
    assert metrics[keys.DP_NOISE_SOURCE] == "csprng" and fake_torchcsprng == ["/dev/urandom"]


# ---------------------------------------------------------------------- simulations


@pytest.mark.usefixtures("shared_engine")
def test_auto_reproduces_a_simulation_bit_for_bit_and_os_does_not(tmp_path):
    def run(source: str, name: str):
        run_dir = simulate({"dp": True, "dp-noise-source": source, "num-server-rounds": 1,
                            "fraction-fit": 1.0, "output-dir": str(tmp_path),
                            "run-name": name}, num_supernodes=3)
        with open(run_dir / "clients.csv") as f:
            clients = list(csv.DictReader(f))
        summary = json.loads((run_dir / "summary.json").read_text())
        return torch.load(run_dir / "model.pt"), clients, summary

    for source, expected in (("auto", "seeded"), ("os", "os")):
        (a, clients, summary), (b, _, _) = run(source, f"{source}-1"), run(source, f"{source}-2")
        assert summary["dp_noise_source"] == expected
        assert summary["dp_noise_sources_seen"] == [expected]
        assert {c["noise_source"] for c in clients} == {expected}
        identical = all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
        assert identical == (source == "auto")
