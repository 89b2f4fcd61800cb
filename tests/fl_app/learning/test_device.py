"""The ``device`` key: its values, where each process resolves it, the start checks, the data.

The logic runs on the CPU; tests that need a real GPU say so and are skipped without one
(``needs_cuda``; this project's CI has none).
"""

import numpy as np
import pytest
import torch
from flwr.common import Code, GetPropertiesRes, Status

from fl_app import keys
from fl_app.client_app import HonestClient
from fl_app.config import parse_run_config
from fl_app.errors import ConfigError, ConfigErrors
from fl_app.experiments.simulate import simulate
from fl_app.federation.checks import client_device_errors
from fl_app.learning import data as fl_data
from fl_app.learning.device import load_partition_on, load_test_set_on, resolve_device
from fl_app.privacy.randomness import noise_generator_on, seeded_generator
from fl_app.server_app import initial_weights

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (none visible to this process)")


def sees_cuda(monkeypatch, count):
    """Make this process report ``count`` CUDA devices (no tensor is ever put on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize("value", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_the_device_key_takes_auto_cpu_cuda_and_cuda_n(value):
    assert parse_run_config({"device": value}).device == value


@pytest.mark.parametrize("value", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "mps", ""])
def test_other_device_values_are_refused_naming_the_key_and_the_allowed_ones(value):
    with pytest.raises(ConfigErrors) as info:
        parse_run_config({"device": value})
    assert info.value.errors[0].key == "device"
    assert "'auto', 'cpu', 'cuda' or 'cuda:N'" in str(info.value)


def test_auto_is_the_cpu_without_cuda_and_the_first_gpu_with_it(monkeypatch):
    sees_cuda(monkeypatch, 0)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    sees_cuda(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(("seen", "value"), [(0, "cuda"), (0, "cuda:0"), (2, "cuda:2")])
def test_a_cuda_device_this_process_lacks_is_an_error_naming_the_key(monkeypatch, seen, value):
    sees_cuda(monkeypatch, seen)
    with pytest.raises(ConfigError) as info:
        resolve_device(value)
    assert info.value.key == "device"
    assert "'auto' or 'cpu'" in str(info.value)
    assert ("no CUDA device" if seen == 0 else "2 CUDA devices") in str(info.value)


def test_a_simulation_asking_for_cuda_here_fails_before_ray_starts(tmp_path, monkeypatch):
    sees_cuda(monkeypatch, 0)
    with pytest.raises(ConfigError, match="'device' = 'cuda'"):
        simulate({"device": "cuda", "output-dir": str(tmp_path)})
    assert not any(tmp_path.iterdir())  # no run folder: nothing started
    sees_cuda(monkeypatch, 1)  # a GPU here, but the clients reserve none: Ray hides it
    with pytest.raises(ConfigError, match="num_gpus_per_client"):
        simulate({"device": "cuda", "output-dir": str(tmp_path)}, num_gpus_per_client=0.0)
    assert not any(tmp_path.iterdir())


class Proxy:
    """A client proxy answering get_properties with the CUDA devices it sees."""

    def __init__(self, cuda_devices):
        self.cuda_devices, self.asked = cuda_devices, 0

    def get_properties(self, ins, timeout, group_id):
        self.asked += 1
        return GetPropertiesRes(Status(Code.OK, ""), {keys.PARTITION_ID: 0,
                                                      keys.CUDA_DEVICES: self.cuda_devices})


def test_the_start_check_asks_the_clients_whether_they_see_the_cuda_device():
    cfg = parse_run_config({"device": "cuda"})
    simulated = [Proxy(0) for _ in range(5)]
    errors = client_device_errors(cfg, simulated, simulated=True)
    assert [e.key for e in errors] == ["device"]
    assert "the simulated clients: no CUDA device" in str(errors[0])
    assert "client-resources-num-gpus" in str(errors[0])
    assert [p.asked for p in simulated] == [1, 0, 0, 0, 0]  # one asked: all alike
    devices = [Proxy(1), Proxy(0), Proxy(2)]  # real devices: each asked, one lacks it
    assert [e.key for e in client_device_errors(cfg, devices, simulated=False)] == ["device"]
    assert [p.asked for p in devices] == [1, 1, 1]
    assert client_device_errors(cfg, [Proxy(1), Proxy(2)], simulated=False) == []
    assert client_device_errors(parse_run_config({"device": "cuda:1"}), [Proxy(1)],
                                simulated=True)[0].key == "device"
    for value in ("auto", "cpu"):  # run anywhere: no message
        proxy = Proxy(0)
        assert client_device_errors(parse_run_config({"device": value}), [proxy], True) == []
        assert proxy.asked == 0


def test_a_client_reports_its_cuda_devices_and_refuses_a_device_it_lacks(monkeypatch):
    sees_cuda(monkeypatch, 0)
    cfg = parse_run_config({"device": "cuda"})
    client = HonestClient(cfg, 0, 10, simulated=True)
    assert client.get_properties({}) == {keys.PARTITION_ID: 0, keys.CUDA_DEVICES: 0}
    with pytest.raises(ConfigError, match="'device' = 'cuda'"):  # a server that skipped it
        client.fit(initial_weights(cfg), {keys.SERVER_ROUND: 1})


def test_data_moves_to_the_device_once_per_process_and_not_at_all_on_the_cpu():
    cfg = fl_data.DataConfig()
    cpu = fl_data.load_partition(cfg, 3, 10, "train")
    assert load_partition_on(torch.device("cpu"), cfg, 3, 10) is cpu  # no copy
    assert load_test_set_on(torch.device("cpu"), cfg) is fl_data.load_test_set(cfg)
    # "meta" stands in for an accelerator on this CPU-only machine: a copy, made once
    meta = torch.device("meta")
    first = load_partition_on(meta, cfg, 3, 10)
    assert first[0].device == meta and first[0].shape == cpu[0].shape
    assert load_partition_on(meta, cfg, 3, 10) is first
    test = load_test_set_on(meta, cfg)
    assert test[0].device == meta and load_test_set_on(meta, cfg) is test


def test_dp_noise_on_the_cpu_draws_from_the_clients_own_generator():
    generator = seeded_generator(7)
    assert noise_generator_on(torch.device("cpu"), generator) is generator


@needs_cuda
def test_dp_noise_on_a_gpu_is_keyed_by_the_clients_generator():
    device = torch.device("cuda", 0)
    first = noise_generator_on(device, seeded_generator(7))
    again = noise_generator_on(device, seeded_generator(7))
    other = noise_generator_on(device, seeded_generator(8))
    assert first.device == device
    draw = [torch.randn(1000, device=device, generator=g) for g in (first, again, other)]
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])


@needs_cuda
@pytest.mark.parametrize("dp", [False, True])
def test_a_client_trains_on_the_gpu_as_well_as_on_the_cpu(dp):
    """Same seeds, other device: not the same floats, but the same quality of update."""
    results = {}
    for device in ("cpu", "cuda"):
        cfg = parse_run_config({"device": device, "dp": dp, "local-epochs": 2})
        client = HonestClient(cfg, 0, 5, simulated=True)
        assert client.device.type == device
        weights, _, metrics = client.fit(initial_weights(cfg), {keys.SERVER_ROUND: 1})
        _, _, evaluated = client.evaluate(weights, {})
        results[device] = evaluated["accuracy"]
        assert all(np.isfinite(w).all() for w in weights)
        assert (metrics["epsilon"] > 0) == dp
    assert abs(results["cpu"] - results["cuda"]) < 0.15
