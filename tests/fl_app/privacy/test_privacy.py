"""DP-SGD through Opacus: accounting across rounds, clipping, noise, modes, validation."""

from __future__ import annotations

import copy
import itertools
import json
import math
import warnings

import pytest
import torch
from opacus.accountants import create_accountant
from opacus.validators import ModuleValidator
from opacus.validators.errors import NotYetSupportedModuleError
from torch import nn

from fl_app import privacy
from fl_app.errors import ConfigError, ConfigErrors
from fl_app.learning.models import build_model
from fl_app.privacy import (
    GRAD_SAMPLE_MODES,
    AccountantStateError,
    DPSettings,
    IncompatibleModelError,
    accounting,
    check_delta,
    default_delta,
    dump_accountant,
    epsilon_after_round,
    epsilon_of,
    load_accountant,
    make_private_compatible,
    new_accountant,
    noise_for_target_epsilon,
    resolve_delta,
    resolve_noise_multiplier,
    sample_rate,
    steps_per_epoch,
    train_private,
)
from fl_app.task import TrainSettings

MODES = sorted(GRAD_SAMPLE_MODES)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as a client runs: tiny batches only lose time to thread sync."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def digits(num_examples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(num_examples, 1, 8, 8, generator=generator),
            torch.randint(0, 10, (num_examples,), generator=generator))


def fresh_model(name: str = "digits-cnn", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name)


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def rounds_of_training(kind: str, rounds: int, sigma: float = 1.1) -> tuple[list[str], int]:
    """Train ``rounds`` rounds, the accountant kept as JSON in between (as in context.state).

    Return the stored state after each round and the total number of steps.
    """
    x, y = digits(40)
    model, settings = fresh_model(), TrainSettings(local_epochs=1, batch_size=8)
    dp = DPSettings(noise_multiplier=sigma, accountant=kind)
    state, states, total = None, [], 0
    for round_ in range(rounds):
        accountant = load_accountant(state, kind)
        _, steps = train_private(model, x, y, settings, dp, accountant,
                                 torch.Generator().manual_seed(round_))
        total += steps
        state = dump_accountant(accountant)
        states.append(state)
    return states, total


# ------------------------------------------------------------------ accounting


@pytest.mark.parametrize("kind", ["rdp", "prv"])
def test_epsilon_over_rounds_equals_one_accountant_for_all_steps(kind: str) -> None:
    states, total = rounds_of_training(kind, rounds=3)
    assert total == 3 * steps_per_epoch(40, 8) == 15
    fresh = create_accountant(kind)
    fresh.history = [(1.1, sample_rate(40, 8), total)]
    epsilon = epsilon_of(load_accountant(states[-1], kind), default_delta(40))
    assert epsilon == pytest.approx(fresh.get_epsilon(delta=default_delta(40)), abs=1e-9)


def test_epsilon_strictly_increases_with_rounds() -> None:
    states, _ = rounds_of_training("rdp", rounds=3)
    epsilons = [epsilon_of(load_accountant(state, "rdp"), default_delta(40)) for state in states]
    assert epsilons[0] > 0
    assert all(a < b for a, b in itertools.pairwise(epsilons))


def test_accountant_state_round_trips_as_a_json_string() -> None:
    accountant = new_accountant("rdp")
    for _ in range(7):
        accountant.step(noise_multiplier=0.1 + 0.2, sample_rate=1 / 3)
    state = dump_accountant(accountant)
    assert isinstance(state, str)
    assert json.loads(state) == {"mechanism": "rdp", "history": [[0.1 + 0.2, 1 / 3, 7]]}
    loaded = load_accountant(state, "rdp")
    assert loaded.history == [(0.1 + 0.2, 1 / 3, 7)]  # floats exact
    loaded.step(noise_multiplier=0.1 + 0.2, sample_rate=1 / 3)
    assert loaded.history == [(0.1 + 0.2, 1 / 3, 8)]  # merges with the stored entry
    assert load_accountant(None, "prv").history == []
    assert epsilon_of(load_accountant(None, "prv"), 1e-5) == 0.0


@pytest.mark.parametrize("state", ["not json", "{}", '{"mechanism": "rdp"}',
                                   '{"mechanism": "rdp", "history": [[1.0, 0.1]]}',
                                   '{"mechanism": "rdp", "history": [[1.0, 1.5, 3]]}',
                                   '{"mechanism": "prv", "history": []}'])
def test_bad_accountant_state_is_refused(state: str) -> None:
    with pytest.raises(AccountantStateError, match="accountant"):
        load_accountant(state, "rdp")


def test_train_private_refuses_an_accountant_of_another_kind() -> None:
    x, y = digits(10)
    with pytest.raises(AccountantStateError, match="dp-accountant"):
        train_private(fresh_model(), x, y, TrainSettings(), DPSettings(accountant="rdp"),
                      new_accountant("prv"), torch.Generator())


def test_epsilon_after_round_predicts_without_changing_the_accountant() -> None:
    x, y = digits(40)
    settings, dp = TrainSettings(batch_size=8), DPSettings(noise_multiplier=1.1)
    accountant = new_accountant("rdp")
    predicted = epsilon_after_round(accountant, dp, 40, settings)
    assert accountant.history == []
    train_private(fresh_model(), x, y, settings, dp, accountant, torch.Generator())
    assert epsilon_of(accountant, resolve_delta(dp, 40)) == predicted


# ------------------------------------------------------------ target epsilon


def test_noise_for_target_epsilon_reaches_the_target() -> None:
    rate, steps, delta = 0.1, 60, 1e-3  # as below: one binary search for both tests
    sigma = noise_for_target_epsilon(3.0, delta, rate, steps, "rdp")
    accountant = create_accountant("rdp")
    accountant.history = [(sigma, rate, steps)]
    assert 3.0 - accounting.EPSILON_TOLERANCE <= accountant.get_epsilon(delta) <= 3.0


def test_resolve_noise_multiplier_calibrates_over_the_planned_rounds() -> None:
    settings = TrainSettings(local_epochs=2, batch_size=10)
    dp = DPSettings(target_epsilon=3.0)
    expected = noise_for_target_epsilon(3.0, default_delta(100), 0.1, 3 * 2 * 10, "rdp")
    assert resolve_noise_multiplier(dp, 100, settings, rounds=3) == expected
    assert resolve_noise_multiplier(DPSettings(noise_multiplier=0.7), 100, settings, 3) == 0.7


@pytest.mark.parametrize(("target", "steps", "why"), [
    (3.0, 0, "at least one planned step"),
    (1e-4, 60, "noise multiplier <= 100"),    # Opacus: "the privacy budget is too low"
    (0.05, 60, "noise multiplier <= 100"),    # reachable, but only with sigma > 100
])
def test_unreachable_target_epsilon_is_a_config_error(target: float, steps: int,
                                                       why: str) -> None:
    with pytest.raises(ConfigError, match="dp-target-epsilon") as info:
        noise_for_target_epsilon(target, 1e-4, 0.1, steps, "rdp")
    assert why in str(info.value)


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"target_epsilon": -1.0}, "dp-target-epsilon"),
    ({"target_epsilon": math.inf}, "dp-target-epsilon"),
    ({"delta": 0.0}, "dp-delta"),
    ({"delta": 1.5}, "dp-delta"),
    ({"accountant": "gdp"}, "dp-accountant"),
])
def test_bad_calibration_input_is_a_config_error(kwargs: dict, key: str) -> None:
    arguments = {"target_epsilon": 3.0, "delta": 1e-4, "sample_rate": 0.1, "total_steps": 60,
                 "accountant": "rdp", **kwargs}
    with pytest.raises(ConfigError, match=key):
        noise_for_target_epsilon(**arguments)


def test_unknown_accountant_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="dp-accountant"):
        load_accountant(None, "moments")


def test_accountant_failure_during_calibration_is_a_config_error(monkeypatch) -> None:
    def fails(**kwargs: object) -> float:
        raise RuntimeError("Discrete mean differs significantly from continuous mean.")

    import opacus.accountants.utils  # what accounting imports when it calibrates

    monkeypatch.setattr(opacus.accountants.utils, "get_noise_multiplier", fails)
    accounting._calibrated_noise.cache_clear()
    with pytest.raises(ConfigError, match="dp-target-epsilon") as info:
        noise_for_target_epsilon(1000.0, 1e-4, 0.5, 1, "prv")
    accounting._calibrated_noise.cache_clear()
    assert "dp-accountant='rdp'" in str(info.value)


# ------------------------------------------------------------------ DP-SGD step


@pytest.mark.parametrize("mode", MODES)
def test_single_example_update_is_clipped_to_lr_times_max_grad_norm(mode: str) -> None:
    # One example, q = 1, no momentum, (almost) no noise: the update is -lr * clipped g,
    # of norm lr * min(||g||, C); ||g|| is far above C here.
    x, y = digits(1)
    x = x * 100
    lr, clip = 1000.0, 0.01
    model = fresh_model()
    before = flat_params(model)
    settings = TrainSettings(local_epochs=1, batch_size=1, learning_rate=lr, momentum=0.0)
    dp = DPSettings(noise_multiplier=1e-12, max_grad_norm=clip, grad_sample_mode=mode)
    train_private(model, x, y, settings, dp, new_accountant("rdp"), torch.Generator())
    reference = fresh_model()
    nn.functional.cross_entropy(reference(x), y).backward()
    assert torch.cat([p.grad.flatten() for p in reference.parameters()]).norm() > 100 * clip
    assert (flat_params(model) - before).norm().item() == pytest.approx(lr * clip, rel=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_batch_update_is_bounded_by_lr_times_max_grad_norm(mode: str) -> None:
    # q = 1: B = N examples, each clipped to C, summed and divided by B = N.
    x, y = digits(16)
    lr, clip = 1000.0, 0.01
    model = fresh_model()
    before = flat_params(model)
    settings = TrainSettings(local_epochs=1, batch_size=16, learning_rate=lr, momentum=0.0)
    dp = DPSettings(noise_multiplier=1e-12, max_grad_norm=clip, grad_sample_mode=mode)
    train_private(model, 100 * x, y, settings, dp, new_accountant("rdp"), torch.Generator())
    change = (flat_params(model) - before).norm().item()
    assert 0 < change <= lr * clip * (1 + 1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_noise_std_is_noise_multiplier_times_max_grad_norm(mode: str) -> None:
    # sigma * C = 1000 swamps the clipped gradients (norm <= C = 1): the update
    # -lr * (sum + noise) / B has a per-coordinate std of lr * sigma * C / B.
    x, y = digits(8)
    model = fresh_model()
    before = flat_params(model)
    settings = TrainSettings(local_epochs=1, batch_size=8, learning_rate=1.0, momentum=0.0)
    dp = DPSettings(noise_multiplier=1000.0, max_grad_norm=1.0, grad_sample_mode=mode)
    train_private(model, x, y, settings, dp, new_accountant("rdp"), torch.Generator())
    assert (flat_params(model) - before).std().item() == pytest.approx(1000.0 / 8, rel=0.05)


@pytest.mark.parametrize("mode", [m for m in MODES if m != "hooks"])
@pytest.mark.parametrize("model_name", ["digits-cnn", "cifar-cnn"])
def test_every_mode_trains_like_opacus_hooks(mode: str, model_name: str) -> None:
    # q = 1 makes the batches independent of the generator; clipping is active.
    shape = (1, 8, 8) if model_name == "digits-cnn" else (3, 32, 32)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, *shape, generator=generator), torch.randint(0, 10, (12,))
    settings = TrainSettings(local_epochs=3, batch_size=12, learning_rate=0.5, momentum=0.5)
    results = {}
    for name in ("hooks", mode):
        model = fresh_model(model_name)
        dp = DPSettings(noise_multiplier=1e-9, max_grad_norm=0.05, grad_sample_mode=name)
        loss, _ = train_private(model, x, y, settings, dp, new_accountant("rdp"),
                                torch.Generator())
        results[name] = (loss, flat_params(model))
    assert results[mode][0] == pytest.approx(results["hooks"][0], rel=1e-5)
    torch.testing.assert_close(results[mode][1], results["hooks"][1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_empty_poisson_batches_are_noisy_accounted_steps(mode: str) -> None:
    # N = 3, B = 1: q = 1/3, 3 steps an epoch, each batch empty with probability 8/27.
    x, y = digits(3)
    model = fresh_model()
    settings = TrainSettings(local_epochs=10, batch_size=1)
    accountant = new_accountant("rdp")
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    sizes = [len(i) for i in privacy.poisson_batches(3, 1 / 3, 30, generator)]
    assert 0 in sizes
    generator.set_state(state)
    dp = DPSettings(grad_sample_mode=mode)
    loss, steps = train_private(model, x, y, settings, dp, accountant, generator)
    assert steps == 30
    assert accountant.history == [(1.0, 1 / 3, 30)]
    assert math.isfinite(loss)
    assert torch.isfinite(flat_params(model)).all()


# ---------------------------------------------------------------------- models


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("mode", MODES)
def test_model_comes_out_plain_after_each_call(mode: str) -> None:
    x, y = digits(20)
    model = fresh_model()
    keys, kind = list(model.state_dict()), type(model)
    plain_attrs = [set(vars(m)) for m in model.modules()]
    accountant = new_accountant("rdp")
    dp = DPSettings(grad_sample_mode=mode)
    for call in range(2):
        before = flat_params(model)
        train_private(model, x, y, TrainSettings(batch_size=5), dp, accountant,
                      torch.Generator().manual_seed(call))
        assert type(model) is kind
        assert list(model.state_dict()) == keys
        assert hook_count(model) == 0
        assert [set(vars(m)) for m in model.modules()] == plain_attrs
        for p in model.parameters():
            assert p.grad is None
            assert not {"grad_sample", "summed_grad", "_forward_counter"} & set(vars(p))
        assert not torch.equal(flat_params(model), before)
    assert accountant.history == [(1.0, 0.25, 8)]


class BatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.norm(self.conv(x))), 1))


def test_batchnorm_model_is_fixed_then_trains() -> None:
    x, y = digits(20)
    model = BatchNormNet()
    with pytest.raises(IncompatibleModelError, match="make_private_compatible"):
        train_private(model, x, y, TrainSettings(), DPSettings(), new_accountant("rdp"),
                      torch.Generator())
    fixed = make_private_compatible(model)
    assert isinstance(model.norm, nn.BatchNorm2d)  # the original is left alone
    assert isinstance(fixed.norm, nn.GroupNorm)
    before = flat_params(fixed)
    loss, steps = train_private(fixed, x, y, TrainSettings(batch_size=5), DPSettings(),
                                new_accountant("rdp"), torch.Generator())
    assert math.isfinite(loss) and steps == 4
    assert not torch.equal(flat_params(fixed), before)


class Unfixable(nn.Linear):
    pass


def test_model_opacus_cannot_fix_is_refused(monkeypatch) -> None:
    monkeypatch.setitem(ModuleValidator.VALIDATORS, Unfixable,
                        lambda module: [NotYetSupportedModuleError("no DP support")])
    with pytest.raises(IncompatibleModelError, match="no DP support"):
        make_private_compatible(nn.Sequential(nn.Flatten(), Unfixable(64, 10)))


def test_in_place_layer_output_is_refused() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(inplace=True),
                          nn.Linear(32, 10))
    x, y = digits(8)
    with pytest.raises(IncompatibleModelError, match="in place"):
        train_private(model, x, y, TrainSettings(batch_size=8), DPSettings(),
                      new_accountant("rdp"), torch.Generator())
    assert hook_count(model) == 0


def test_shared_layer_per_sample_gradients_are_summed_before_clipping() -> None:
    # A layer used twice: its per-sample gradient is the sum of both uses.
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.flatten, self.inner = nn.Flatten(), nn.Linear(64, 64)
            self.out = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.tanh(self.inner(torch.tanh(self.inner(self.flatten(x))))))

    x, y = digits(12)
    settings = TrainSettings(local_epochs=2, batch_size=12, learning_rate=0.5)
    results = []
    for mode in ("hooks", "bookkeeping"):
        torch.manual_seed(0)
        model = Twice()
        dp = DPSettings(noise_multiplier=1e-9, max_grad_norm=0.05, grad_sample_mode=mode)
        train_private(model, x, y, settings, dp, new_accountant("rdp"), torch.Generator())
        results.append(flat_params(model))
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(("field", "value", "key"), [
    ("noise_multiplier", 0.0, "dp-noise-multiplier"),
    ("noise_multiplier", -1.0, "dp-noise-multiplier"),
    ("noise_multiplier", math.nan, "dp-noise-multiplier"),
    ("noise_multiplier", math.inf, "dp-noise-multiplier"),
    ("noise_multiplier", "1.0", "dp-noise-multiplier"),
    ("max_grad_norm", 0.0, "dp-max-grad-norm"),
    ("max_grad_norm", -0.5, "dp-max-grad-norm"),
    ("delta", 0.0, "dp-delta"),
    ("delta", 1.0, "dp-delta"),
    ("delta", -1e-5, "dp-delta"),
    ("accountant", "gdp", "dp-accountant"),
    ("accountant", "moments", "dp-accountant"),
    ("target_epsilon", 0.0, "dp-target-epsilon"),
    ("target_epsilon", -2.0, "dp-target-epsilon"),
    ("max_epsilon", 0.0, "dp-max-epsilon"),
    ("grad_sample_mode", "vmap", "dp-grad-sample-mode"),
])
def test_bad_dp_setting_is_a_config_error_naming_its_key(field: str, value: object,
                                                          key: str) -> None:
    with pytest.raises(ConfigError, match=key) as info:
        DPSettings(**{field: value})
    assert info.value.key == key


def test_accountant_choices_come_from_opacus_registry() -> None:
    assert privacy.accountant_names() == ["prv", "rdp"]
    with pytest.raises(ConfigError, match=r"\['prv', 'rdp'\]") as info:
        DPSettings(accountant="gdp")
    assert "underestimate" in str(info.value)


def test_target_above_budget_is_refused() -> None:
    with pytest.raises(ConfigError, match="dp-target-epsilon"):
        DPSettings(target_epsilon=5.0, max_epsilon=2.0)
    DPSettings(target_epsilon=2.0, max_epsilon=2.0)


def test_several_bad_settings_are_reported_together() -> None:
    with pytest.raises(ConfigErrors) as info:
        DPSettings(noise_multiplier=0.0, max_grad_norm=-1.0, accountant="x")
    assert [e.key for e in info.value.errors] == ["dp-noise-multiplier", "dp-max-grad-norm",
                                                  "dp-accountant"]


@pytest.mark.parametrize("num_examples", [1, 7, 500, 60_000])
def test_default_delta_is_below_one_over_n(num_examples: int) -> None:
    delta = default_delta(num_examples)
    assert delta == 1 / (10 * num_examples)
    assert check_delta(delta, num_examples) == delta
    assert resolve_delta(DPSettings(), num_examples) == delta


def test_delta_at_or_above_one_over_n_is_refused() -> None:
    assert check_delta(1e-3, 999) == 1e-3
    for delta in (1e-3, 0.5):
        with pytest.raises(ConfigError, match="dp-delta") as info:
            check_delta(delta, 1000)
        assert "1 / N" in str(info.value)
    with pytest.raises(ConfigError, match="dp-delta"):
        resolve_delta(DPSettings(delta=0.01), 500)


def test_sampling_follows_opacus_dp_data_loader() -> None:
    assert (sample_rate(500, 10), steps_per_epoch(500, 10)) == (0.02, 50)
    assert (sample_rate(45, 10), steps_per_epoch(45, 10)) == (10 / 45, 5)
    assert (sample_rate(3, 10), steps_per_epoch(3, 10)) == (1.0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert privacy.planned_steps(45, TrainSettings(local_epochs=2), rounds=3) == 30


def test_mean_loss_matches_the_models_loss_on_a_full_batch() -> None:
    x, y = digits(6)
    model = fresh_model()
    reference = copy.deepcopy(model)
    loss, _ = train_private(model, x, y, TrainSettings(batch_size=6), DPSettings(),
                            new_accountant("rdp"), torch.Generator())
    assert loss == pytest.approx(nn.functional.cross_entropy(reference(x), y).item(), rel=1e-5)


def test_private_round_charges_a_trained_round_and_not_a_refused_one() -> None:
    """The one call per client round: accountant in, budget checked, trained, state out."""
    from fl_app.privacy.client_round import private_round

    x, y = digits(20)
    settings = TrainSettings(local_epochs=1, batch_size=5, learning_rate=0.1, momentum=0.0)
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0)
    model = fresh_model()
    first = private_round(model, x, y, settings, dp, 3, None, torch.Generator().manual_seed(0))
    assert first.trained and first.epsilon > 0 and not math.isnan(first.loss)
    assert json.loads(first.accountant)["history"] == [[1.0, 0.25, 4]]
    budget = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, max_epsilon=first.epsilon)
    before = flat_params(model)
    refused = private_round(model, x, y, settings, budget, 3, first.accountant,
                            torch.Generator().manual_seed(1))
    assert not refused.trained and "dp-max-epsilon" in refused.status
    assert refused.accountant == first.accountant and refused.epsilon == first.epsilon
    assert torch.equal(flat_params(model), before)  # not trained, not charged
