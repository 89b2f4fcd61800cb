"""The optimised and defence-aware attacks against their definitions."""

import numpy as np
import pytest

from attacks.agnostic import agnostic_update, perturbation
from attacks.errors import AttackParameterError
from attacks.fang_krum import fang_krum_update, lambda_upper_bound
from attacks.fang_trimmed_mean import fang_trimmed_mean_bounds
from attacks.ipm import ipm_update
from attacks.min_max import min_max_constraint
from attacks.min_sum import min_sum_constraint
from attacks.registry import KNOWLEDGE, attack_names, craft_byzantine_updates, get_attack
from strategies import aggregate
from strategies.krum import krum_select

RNG = np.random.default_rng(0)


def cloud(k=10, d=6, seed=1):
    rng = np.random.default_rng(seed)
    return 1.0 + 0.1 * rng.standard_normal((k, d))  # honest updates share a direction


def test_min_max_finds_the_boundary_of_its_constraint():
    honest = np.array([[0.0], [2.0]])  # spread 2; mu = 1, p = -1: v = 1 - gamma, gamma <= 1
    v, gamma = agnostic_update(honest, min_max_constraint, "unit", 10.0)
    assert gamma == pytest.approx(1.0, abs=1e-4) and v[0] == pytest.approx(0.0, abs=1e-4)
    x = cloud()
    for direction in ("unit", "std", "sign"):
        v, gamma = agnostic_update(x, min_max_constraint, direction, 10.0)
        feasible = min_max_constraint(x)
        assert feasible(v) and gamma > 0
        p, mu = perturbation(x, direction), x.mean(axis=0)
        assert not feasible(mu + (gamma + 1e-3) * p)  # a little further breaks it
        np.testing.assert_allclose(v, mu + gamma * p)


def test_min_sum_finds_the_boundary_of_its_constraint():
    honest = np.array([[0.0], [2.0], [4.0]])  # sum (2 - g)^2 + g^2 + (2 + g)^2 <= 20: g <= 2
    v, gamma = agnostic_update(honest, min_sum_constraint, "unit", 10.0)
    assert gamma == pytest.approx(2.0, abs=1e-4) and v[0] == pytest.approx(0.0, abs=1e-4)
    x = cloud()
    v, gamma = agnostic_update(x, min_sum_constraint, "std", 10.0)
    feasible, p = min_sum_constraint(x), perturbation(x, "std")
    assert feasible(v) and not feasible(x.mean(axis=0) + (gamma + 1e-3) * p)


def test_fang_trimmed_mean_draws_beyond_the_honest_range_against_its_sign():
    honest = np.array([[1.0, -1.0, -3.0], [3.0, -2.0, 1.0]])
    low, high = fang_trimmed_mean_bounds(honest, b=2.0)
    # coordinate 0 moves up (mean 2 > 0), min 1 > 0: [1/2, 1]; coordinate 1 moves down,
    # max -1 <= 0: [-1, -1/2]; coordinate 2 moves down (mean -1), max 1 > 0: [1, 2]
    np.testing.assert_allclose(low, [0.5, -1.0, 1.0])
    np.testing.assert_allclose(high, [1.0, -0.5, 2.0])
    crafted = craft_byzantine_updates("fang-trimmed-mean", honest, 50, RNG)
    assert np.all((crafted >= low) & (crafted <= high))
    assert len({tuple(r) for r in crafted}) == 50  # one draw per attacker
    x = cloud(k=8)
    attacked = np.vstack([x, craft_byzantine_updates("fang-trimmed-mean", x, 3, RNG)])
    moved = aggregate("trimmed-mean", attacked, num_byzantine=3) - x.mean(axis=0)
    assert np.all(moved < 0)  # every coordinate pushed against the honest direction


def test_fang_krum_is_selected_by_krum_with_full_knowledge():
    # noisy honest updates around a small mean, as local SGD gives them
    x = 0.3 + np.random.default_rng(4).standard_normal((10, 20))
    v, lam = fang_krum_update(x, 3, declared_f=3)
    assert 0 < lam <= lambda_upper_bound(x, 3)
    np.testing.assert_allclose(v, -lam * np.sign(x.mean(axis=0)))
    vectors = np.vstack([x, np.tile(v, (3, 1))])
    assert krum_select(vectors, 3)[0] >= 10  # Krum picks an attacker
    assert np.dot(v, x.mean(axis=0)) < 0  # which moves the model backwards


def test_mimic_copies_one_honest_update():
    x = cloud(k=4)
    np.testing.assert_array_equal(craft_byzantine_updates("mimic", x, 3, RNG, target=2),
                                  np.tile(x[2], (3, 1)))
    with pytest.raises(AttackParameterError, match="4 known honest updates"):
        craft_byzantine_updates("mimic", x, 1, RNG, target=4)


def damage(honest, crafted, defence):
    return np.linalg.norm(defence(np.vstack([honest, crafted])) - honest.mean(axis=0))


@pytest.mark.parametrize("defence_name", ["fedavg", "median", "krum"])
def test_opt_ipm_does_at_least_the_damage_of_fixed_epsilons(defence_name):
    x = cloud(k=10, d=8)

    def defence(u):
        return aggregate(defence_name, u, num_byzantine=2)

    crafted = craft_byzantine_updates("opt-ipm", x, 2, RNG, defence=defence)
    best = damage(x, crafted, defence)
    for eps in (0.0, 0.1, 0.5, 10.0):
        assert best >= damage(x, np.tile(ipm_update(x, eps), (2, 1)), defence) - 1e-12


def test_opt_alie_does_at_least_the_damage_of_alies_z_max():
    x = cloud(k=10, d=8)

    def defence(u):
        return aggregate("trimmed-mean", u, num_byzantine=3)

    best = damage(x, craft_byzantine_updates("opt-alie", x, 3, RNG, defence=defence), defence)
    plain = damage(x, craft_byzantine_updates("alie", x, 3, RNG, num_clients=13), defence)
    assert best >= plain - 1e-12


def test_every_attack_declares_its_threat_models():
    for name in attack_names():
        assert set(get_attack(name).knowledge) <= set(KNOWLEDGE) and get_attack(name).knowledge
    assert get_attack("min-max").knowledge == ("colluders", "omniscient")
    assert "omniscient" not in get_attack("label-flip").knowledge
    assert get_attack("ipm").knowledge == KNOWLEDGE


def test_backdoor_poisons_the_fraction_it_says_with_the_trigger_and_target():
    from attacks.backdoor import poison_with_trigger, scale_update

    x = np.random.default_rng(2).uniform(0, 0.5, size=(40, 1, 8, 8))
    y = np.arange(40) % 10
    px, py = poison_with_trigger(x, y, 10, np.random.default_rng(0), target=3, fraction=0.25,
                                 trigger_size=2)
    changed = np.flatnonzero(np.any(px != x, axis=(1, 2, 3)))
    assert len(changed) == 10 and np.all(py[changed] == 3)
    assert np.all(px[changed][:, :, -2:, -2:] == x.max())  # the brightest value, 2 x 2
    unchanged = np.setdiff1d(np.arange(40), changed)
    assert np.array_equal(px[unchanged], x[unchanged]) and np.array_equal(py[unchanged],
                                                                           y[unchanged])
    update = np.array([3.0, 4.0])
    np.testing.assert_allclose(scale_update(update, num_clients=20, server_learning_rate=0.5),
                               40 * update)  # gamma = n / eta
    np.testing.assert_allclose(scale_update(update, num_clients=20, server_learning_rate=0.5,
                                            attackers_per_round=4), 10 * update)  # n / (q eta)
    bounded = scale_update(update, num_clients=20, server_learning_rate=0.5,
                           mode="constrain-and-scale", norm_bound=2.0)
    assert np.linalg.norm(bounded) == pytest.approx(2.0)


def test_backdoor_accuracy_counts_triggered_images_of_other_classes_only():
    from attacks.backdoor import backdoor_accuracy, stamp_trigger

    x = np.zeros((6, 1, 4, 4))
    y = np.array([0, 0, 1, 2, 3, 4])

    def honest(images):  # a clean model: the true class (the images come in order)
        assert len(images) == 4  # the two target-class images are left out
        return y[y != 0]

    assert backdoor_accuracy(honest, x, y, target=0) == 0.0

    def backdoored(images):  # predicts the target exactly when the trigger is there
        return np.where(images[:, 0, -1, -1] == 1.0, 0, 1)

    stamped = stamp_trigger(x, 2, 1.0)
    assert backdoor_accuracy(backdoored, stamped, y, target=0, trigger_size=2) == 1.0


def test_constrain_and_scale_trains_on_the_papers_loss_with_the_distance_as_anomaly_term():
    """(1 - a) CE + a ||theta - theta_0||^2, by hand: two full-batch SGD steps of a linear model."""
    import torch

    from fl_app.task import TrainSettings, train

    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.arange(8) % 2
    model = torch.nn.Linear(3, 2)
    start = [p.detach().clone() for p in model.parameters()]
    a, lr = 0.4, 0.5
    train(model, x, y, TrainSettings(local_epochs=2, batch_size=8, learning_rate=lr,
                                     momentum=0.0), torch.Generator().manual_seed(0),
          anomaly_weight=a)
    theta = [p.clone().requires_grad_(True) for p in start]
    for _ in range(2):
        ce = torch.nn.functional.cross_entropy(x @ theta[0].T + theta[1], y)
        distance = sum(((t - t0) ** 2).sum() for t, t0 in zip(theta, start, strict=True))
        grads = torch.autograd.grad((1 - a) * ce + a * distance, theta)
        theta = [(t - lr * g).detach().requires_grad_(True)
                 for t, g in zip(theta, grads, strict=True)]
    for p, t in zip(model.parameters(), theta, strict=True):
        torch.testing.assert_close(p.detach(), t.detach())
    plain = torch.nn.Linear(3, 2)
    plain.load_state_dict(dict(zip(("weight", "bias"), start, strict=True)))
    train(plain, x, y, TrainSettings(local_epochs=2, batch_size=8, learning_rate=lr,
                                     momentum=0.0), torch.Generator().manual_seed(0))
    moved = [sum(((p - p0) ** 2).sum() for p, p0 in zip(m.parameters(), start, strict=True)).item()
             for m in (model, plain)]
    assert moved[0] < moved[1]  # the anomaly term keeps the attacker nearer the global model


def test_the_byzantine_backdoor_client_trains_with_the_anomaly_weight_it_is_given():
    from fl_app.client_app import HonestClient
    from fl_app.config import parse_run_config
    from fl_app.federation.roles import wrap_byzantine
    from fl_app.server_app import initial_weights
    from strategies.updates import flatten

    def update_norm(weight):
        cfg = parse_run_config({"attack": "backdoor", "num-attackers": 1,
                                "backdoor-mode": "constrain-and-scale", "backdoor-norm-bound": 1e6,
                                "backdoor-anomaly-weight": weight})
        w = initial_weights(cfg)
        client = wrap_byzantine(HonestClient(cfg, 0, 10), cfg, 0, 10)
        sent, _, _ = client.fit(w, {"server-round": 1})
        return np.linalg.norm(flatten(sent) - flatten(w))

    assert update_norm(0.9) < 0.5 * update_norm(0.0)
