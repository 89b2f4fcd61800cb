"""The Byzantine client composed into the app, the omniscient hook, federation checks."""

import numpy as np
import pytest

from attacks.assignment import byzantine_partitions
from attacks.errors import InjectedFault
from fl_app import keys
from fl_app.client_app import HonestClient
from fl_app.config import parse_run_config
from fl_app.federation.roles import (
    attackers_per_round,
    is_byzantine,
    omniscient_hook,
    wrap_byzantine,
)
from fl_app.server_app import initial_weights
from strategies.updates import flatten

N = 10


def attack_cfg(**kw):
    return parse_run_config({"attack": "ipm", "num-attackers": 3, "ipm-epsilon": 0.5,
                             "attack-knowledge": "colluders", **kw})


def byzantine_clients(cfg, calls=None):
    clients = []
    for pid in byzantine_partitions(cfg.seed, N, cfg.num_attackers):
        honest = HonestClient(cfg, pid, N)
        if calls is not None:
            original = honest.train_weights

            def spy(params, rnd, partition_id=None, poison=None, _orig=original):
                calls.append(partition_id)
                return _orig(params, rnd, partition_id, poison)

            honest.train_weights = spy
        clients.append(wrap_byzantine(honest, cfg, pid, N))
    return clients


def test_colluders_send_bit_identical_updates_and_touch_only_byzantine_data():
    cfg = attack_cfg()
    w = initial_weights(cfg)
    calls: list = []
    clients = byzantine_clients(cfg, calls)
    sent = [c.fit(w, {keys.SERVER_ROUND: 2}) for c in clients]
    first = flatten(sent[0][0])
    for weights, _, metrics in sent[1:]:
        assert np.array_equal(flatten(weights), first)  # bit-identical
        assert metrics[keys.BYZANTINE] and metrics[keys.EPSILON] == -1.0
    byz = set(byzantine_partitions(cfg.seed, N, 3))
    assert {c if c is not None else -1 for c in calls} - {-1} <= byz
    # the crafted update is -epsilon times the mean of the colluders' honest updates
    honest = [HonestClient(cfg, p, N).train_weights(w, 2)[0] for p in sorted(byz)]
    mean = np.mean([flatten(h) - flatten(w) for h in honest], axis=0)
    np.testing.assert_allclose(first - flatten(w), -0.5 * mean, rtol=1e-5, atol=1e-7)


def test_colluders_differ_across_rounds_and_own_mode_differs_across_clients():
    cfg = attack_cfg()
    w = initial_weights(cfg)
    c = byzantine_clients(cfg)[0]
    r2, r3 = (flatten(c.fit(w, {keys.SERVER_ROUND: r})[0]) for r in (2, 3))
    assert not np.array_equal(r2, r3)
    own = byzantine_clients(attack_cfg(**{"attack-knowledge": "own"}))
    a, b = (flatten(x.fit(w, {keys.SERVER_ROUND: 2})[0]) for x in own[:2])
    assert not np.array_equal(a, b)


def test_before_the_start_round_a_byzantine_client_trains_honestly():
    cfg = attack_cfg(**{"attack-start-round": 5})
    w = initial_weights(cfg)
    client = byzantine_clients(cfg)[0]
    weights, _, metrics = client.fit(w, {keys.SERVER_ROUND: 4})
    honest = HonestClient(cfg, client.partition_id, N).train_weights(w, 4)[0]
    assert np.array_equal(flatten(weights), flatten(honest)) and metrics[keys.BYZANTINE]


def test_fault_attacks():
    w = initial_weights(attack_cfg())
    nan = byzantine_clients(attack_cfg(attack="nan"))[0].fit(w, {keys.SERVER_ROUND: 1})[0]
    assert np.isnan(flatten(nan)).all()
    with pytest.raises(InjectedFault):
        byzantine_clients(attack_cfg(attack="crash"))[0].fit(w, {keys.SERVER_ROUND: 1})
    wrong = byzantine_clients(attack_cfg(attack="wrong-shape"))[0].fit(w, {keys.SERVER_ROUND: 1})
    assert len(wrong[0]) == 1 and wrong[0][0].size == flatten(w).size + 1


def test_roles_follow_the_seeded_draw_or_the_node_config():
    cfg = attack_cfg()
    byz = byzantine_partitions(cfg.seed, N, 3)
    assert [p for p in range(N) if is_byzantine(cfg, {}, p, N)] == list(byz)
    honest_pid = next(p for p in range(N) if p not in byz)
    assert is_byzantine(cfg, {keys.BYZANTINE: "true"}, honest_pid, N)
    assert not is_byzantine(cfg, {keys.BYZANTINE: False}, byz[0], N)
    omni = attack_cfg(**{"attack-knowledge": "omniscient"})
    assert not any(is_byzantine(omni, {}, p, N) for p in range(N))  # the server attacks


def test_omniscient_hook_corrupts_exactly_q_from_the_start_round():
    cfg = attack_cfg(**{"attack-knowledge": "omniscient", "attack-start-round": 3})
    hook = omniscient_hook(cfg)
    updates = np.random.default_rng(0).normal(size=(8, 50))
    for rnd in (1, 2):
        same, corrupted = hook(rnd, updates, [{}] * 8)
        assert corrupted == [] and same is updates
    for rnd in (3, 4, 5):
        out, corrupted = hook(rnd, updates, [{}] * 8)
        assert len(corrupted) == 3
        honest = [i for i in range(8) if i not in corrupted]
        np.testing.assert_array_equal(out[honest], updates[honest])
        np.testing.assert_allclose(out[corrupted], np.tile(-0.5 * updates[honest].mean(0), (3, 1)))
    assert omniscient_hook(parse_run_config({})) is None


@pytest.mark.parametrize(("accepted", "corrupted_rows"), [(3, 2), (2, 1), (1, 0), (0, 0)])
def test_a_round_left_with_few_updates_keeps_one_honest_row_and_goes_on(accepted,
                                                                         corrupted_rows):
    """Failures can leave fewer updates than attackers (3 here); the run must not stop."""
    hook = omniscient_hook(attack_cfg(**{"attack-knowledge": "omniscient"}))
    updates = np.random.default_rng(1).normal(size=(accepted, 20))
    out, corrupted = hook(1, updates, [{}] * accepted)
    assert len(corrupted) == corrupted_rows
    honest = [i for i in range(accepted) if i not in corrupted]
    assert len(honest) == min(accepted, 1) or accepted > 3
    np.testing.assert_array_equal(out[honest], updates[honest])


def test_a_device_without_its_partition_in_the_node_config_gets_a_clear_error():
    from fl_app.client_app import node_partition
    from fl_app.errors import ConfigError

    assert node_partition({"partition-id": 2, "num-partitions": 5}) == (2, 5)
    with pytest.raises(ConfigError, match="--node-config"):
        node_partition({"data-dir": "/data"})
    with pytest.raises(ConfigError, match="partition-id"):
        node_partition({"partition-id": 5, "num-partitions": 5})


def test_backdoor_colluders_share_model_replacement_by_their_expected_number_per_round():
    """Model replacement: gamma = n / (q * eta), so q colluders sum to one boosted update."""
    def cfg(knowledge, fraction):
        return parse_run_config({"attack": "backdoor", "num-attackers": 10,
                                 "attack-knowledge": knowledge, "fraction-fit": fraction})

    colluders = tuple(byzantine_partitions(0, 100, 10))
    assert attackers_per_round(cfg("colluders", 1.0), 100, colluders) == 10.0
    assert attackers_per_round(cfg("colluders", 0.25), 100, colluders) == 2.5  # 10 * 25 / 100
    assert attackers_per_round(cfg("colluders", 0.05), 100, colluders) == 1.0  # never below 1
    assert attackers_per_round(cfg("own", 1.0), 100, colluders) == 1.0  # alone: the paper's
    client = HonestClient(cfg("colluders", 0.25), colluders[0], 100)
    byzantine = wrap_byzantine(client, cfg("colluders", 0.25), colluders[0], 100)
    assert byzantine.attack_params["num_clients"] == 25
    assert byzantine.attack_params["attackers_per_round"] == 2.5
