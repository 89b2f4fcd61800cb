import numpy as np
import pytest

from attacks import registry
from attacks.errors import (
    AttackKindError,
    AttackParameterError,
    DuplicateAttackError,
    InjectedFault,
    UnknownAttackError,
)
from attacks.registry import (
    AttackKind,
    attack_names,
    craft_byzantine_updates,
    get_attack,
    register_attack,
)

UPDATE_ATTACKS = attack_names(AttackKind.UPDATE)
HONEST = np.random.default_rng(42).normal(size=(7, 11)).astype(np.float32)


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register attacks without leaking them into other tests."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_registered_names_and_kinds() -> None:
    kinds = {name: get_attack(name).kind.value for name in attack_names()}
    assert kinds == {
        "alie": "update",
        "backdoor": "data",
        "crash": "fault",
        "fang-krum": "update",
        "fang-trimmed-mean": "update",
        "mimic": "update",
        "min-max": "update",
        "min-sum": "update",
        "opt-alie": "update",
        "opt-ipm": "update",
        "gaussian": "update",
        "ipm": "update",
        "label-flip": "data",
        "nan": "fault",
        "none": "none",
        "sign-flip": "update",
        "wrong-shape": "fault",
    }
    assert get_attack("none").fn is None


def test_param_names() -> None:
    assert get_attack("ipm").param_names == ("epsilon",)
    assert get_attack("alie").param_names == ("num_clients", "z_max")
    assert get_attack("none").param_names == ()


@pytest.mark.parametrize("name", UPDATE_ATTACKS)
@pytest.mark.parametrize("num_attackers", [1, 3])
def test_update_attack_contract(name: str, num_attackers: int) -> None:
    rows = craft_byzantine_updates(name, HONEST, num_attackers, np.random.default_rng(0))
    assert rows.shape == (num_attackers, HONEST.shape[1])
    assert rows.dtype == HONEST.dtype
    assert np.isfinite(rows).all()
    again = craft_byzantine_updates(name, HONEST, num_attackers, np.random.default_rng(0))
    np.testing.assert_array_equal(rows, again)  # deterministic given the seed
    if not get_attack(name).per_attacker:
        assert (rows == rows[0]).all()  # all attackers send the same vector


@pytest.mark.parametrize("name", UPDATE_ATTACKS)
def test_update_attack_with_one_known_update_and_no_attacker(name: str) -> None:
    own = HONEST[:1].astype(np.float64)
    assert craft_byzantine_updates(name, own, 1, np.random.default_rng(0)).shape == (1, 11)
    assert craft_byzantine_updates(name, own, 0, np.random.default_rng(0)).shape == (0, 11)


def test_formulas_through_the_entry_point() -> None:
    rng = np.random.default_rng(0)
    mu = HONEST.astype(np.float64).mean(axis=0)
    sigma = HONEST.astype(np.float64).std(axis=0)
    ipm = craft_byzantine_updates("ipm", HONEST, 2, rng, epsilon=0.1)
    np.testing.assert_allclose(ipm, np.tile(-0.1 * mu, (2, 1)), rtol=1e-6)
    alie = craft_byzantine_updates("alie", HONEST, 3, rng, num_clients=10, z_max=1.5)
    np.testing.assert_allclose(alie, np.tile(mu + 1.5 * sigma, (3, 1)), rtol=1e-6)
    flip = craft_byzantine_updates("sign-flip", HONEST, 2, rng, scale=2.0)
    np.testing.assert_array_equal(flip, -2.0 * HONEST[:2])


def test_unknown_attack_lists_every_valid_name() -> None:
    with pytest.raises(UnknownAttackError) as info:
        get_attack("ipn")
    message = str(info.value)
    assert "'ipn'" in message
    for name in attack_names():
        assert name in message
    assert isinstance(info.value, ValueError)


def test_unknown_parameter_lists_the_valid_ones() -> None:
    with pytest.raises(
        AttackParameterError, match=r"takes the parameters \(epsilon\); got unknown eps"
    ):
        craft_byzantine_updates("ipm", HONEST, 1, np.random.default_rng(0), eps=0.1)


@pytest.mark.parametrize("name", ["none", "label-flip"])
def test_non_crafting_kinds_refuse_to_craft(name: str) -> None:
    with pytest.raises(AttackKindError, match="crafts no updates; crafting attacks are: alie"):
        craft_byzantine_updates(name, HONEST, 1, np.random.default_rng(0))


def test_rejects_a_legacy_random_state() -> None:
    with pytest.raises(AttackParameterError, match=r"numpy\.random\.Generator"):
        craft_byzantine_updates("gaussian", HONEST, 1, np.random.RandomState(0))  # type: ignore[arg-type]


def test_rejects_negative_attacker_count() -> None:
    with pytest.raises(AttackParameterError, match="num_attackers must be an integer >= 0"):
        craft_byzantine_updates("ipm", HONEST, -1, np.random.default_rng(0))


def test_faults_through_the_entry_point() -> None:
    rng = np.random.default_rng(0)
    assert np.isnan(craft_byzantine_updates("nan", HONEST, 2, rng)).all()
    assert craft_byzantine_updates("wrong-shape", HONEST, 2, rng).shape == (2, 12)
    with pytest.raises(InjectedFault):
        craft_byzantine_updates("crash", HONEST, 1, rng)


def test_refuses_duplicates() -> None:
    with pytest.raises(DuplicateAttackError, match="'ipm' is already registered"):
        register_attack("ipm", AttackKind.UPDATE, registry.ipm.craft_ipm, "again")


@pytest.mark.usefixtures("scratch_registry")
def test_a_registered_attack_is_listed_and_craftable() -> None:
    def craft_zero(honest: np.ndarray, num_attackers: int, rng: np.random.Generator) -> np.ndarray:
        return np.zeros((num_attackers, honest.shape[1]), honest.dtype)

    spec = register_attack("zero", "update", craft_zero, "sends zeros")
    assert spec.kind is AttackKind.UPDATE
    assert "zero" in attack_names(AttackKind.UPDATE)
    assert craft_byzantine_updates("zero", HONEST, 2, np.random.default_rng(0)).shape == (2, 11)


@pytest.mark.usefixtures("scratch_registry")
def test_contract_violation_is_reported() -> None:
    register_attack("bad", "update", lambda h, q, rng: h, "returns the honest rows")
    with pytest.raises(AttackKindError, match=r"broke the crafting contract.*\(2, 11\)"):
        craft_byzantine_updates("bad", HONEST, 2, np.random.default_rng(0))


@pytest.mark.usefixtures("scratch_registry")
@pytest.mark.parametrize(
    ("name", "kind", "fn", "match"),
    [
        ("Bad_Name", "update", len, "kebab-case"),
        ("new", "poison", len, "kind must be one of none, update, data, fault; got 'poison'"),
        ("new", "none", len, "fn must be None exactly for kind 'none'"),
        ("new", "update", None, "fn must be None exactly for kind 'none'"),
    ],
)
def test_register_rejects_bad_specs(name: str, kind: str, fn: object, match: str) -> None:
    with pytest.raises(AttackParameterError, match=match):
        register_attack(name, kind, fn, "x")  # type: ignore[arg-type]
