"""The explicit registry of attacks: name -> :class:`AttackSpec`, and the crafting entry.

Kinds (``AttackSpec.kind``) tell a client how to apply an attack:

- ``"none"``: no attack; the client behaves honestly (``fn`` is ``None``).
- ``"update"``: update crafting; ``fn`` has the uniform crafting signature below.
- ``"data"``: data poisoning; ``fn(x, y, num_classes, rng, **params) -> (x, y)``
  transforms the attacker's training data; ``scale``, if set, then rescales its update
  (the backdoor's model replacement).
- ``"fault"``: fault injection for reliability tests; ``fn`` has the crafting signature.

Uniform crafting signature (kinds ``"update"`` and ``"fault"``)::

    fn(honest_updates, num_attackers, rng, **params) -> ndarray of shape (q, d)

``honest_updates`` is the ``(k, d)`` matrix of honest updates ``d_i = w_i - w`` the
adversary knows (``k = 1``, as one row, when a client knows only its own update);
``num_attackers`` is ``q``, the number of attackers crafted for; ``rng`` a
``numpy.random.Generator`` (used by randomized attacks only); ``params`` the attack's
keyword-only parameters, each with a documented default. Row ``j`` is what attacker ``j``
sends; for attacks with ``per_attacker=False`` all rows are identical. Rows keep the
input's float dtype. Call it through :func:`craft_byzantine_updates`, which validates
the name, kind and parameters.

Adding an attack: one file ``attacks/<name>.py`` with its math, a ``craft_<name>``
function of the signature above and its tunable parameters declared next to the formula
(a ``PARAMS`` tuple of :class:`strategies.params.Param`: each becomes the run-config key
``<name>-<param>``), plus, in this module, its name in the ``from attacks import ...``
line and one ``register_attack`` call at the bottom. Registering here (rather
than in each attack module) means importing ``attacks.registry`` registers every attack,
and no attack module imports the registry, so there is no import cycle.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from attacks import (
    alie,
    backdoor,
    fang_krum,
    fang_trimmed_mean,
    faults,
    gaussian,
    ipm,
    label_flip,
    mimic,
    min_max,
    min_sum,
    opt_alie,
    opt_ipm,
    sign_flip,
)
from attacks._common import as_update_matrix, check_count, float_dtype
from attacks.errors import (
    AttackKindError,
    AttackParameterError,
    DuplicateAttackError,
    UnknownAttackError,
)
from strategies.params import Param, check_declared_keywords


class AttackKind(str, Enum):  # noqa: UP042 (StrEnum would change str() of members)
    """How a client applies an attack (see the module docstring)."""

    NONE = "none"
    UPDATE = "update"
    DATA = "data"
    FAULT = "fault"


CRAFTING_KINDS = frozenset({AttackKind.UPDATE, AttackKind.FAULT})
"""Kinds whose ``fn`` has the uniform crafting signature."""

_NAME_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack.

    Attributes:
        name: kebab-case name, the value of the run config's attack key.
        kind: how a client applies it (:class:`AttackKind`).
        fn: the crafting function (kinds ``update`` and ``fault``), the data transform
            (kind ``data``) or ``None`` (kind ``none``).
        description: one line for help texts and error messages.
        per_attacker: ``True`` if crafted rows may differ between attackers.
        params: the tunable parameters, declared in the attack's module (run-config
            keys ``<name>-<param>``).
        context: keywords of ``fn`` the caller supplies from the round, not the user
            (ALIE's ``num_clients``; ``declared_f``, the f the defence declares;
            ``defence``, the run's aggregation as a function of the updates).
        knowledge: the threat models (``attack-knowledge`` values) it supports: what
            the attackers must know of the honest updates for the attack to mean
            anything (:data:`KNOWLEDGE`).

    """

    name: str
    kind: AttackKind
    fn: Callable[..., Any] | None
    description: str
    per_attacker: bool = False
    params: tuple[Param, ...] = ()
    context: tuple[str, ...] = ()
    knowledge: tuple[str, ...] = ()
    scale: Callable[..., Any] | None = None

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the keyword-only parameters of ``fn`` (the attack's ``**params``)."""
        if self.fn is None:
            return ()
        parameters = inspect.signature(self.fn).parameters.values()
        return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


_REGISTRY: dict[str, AttackSpec] = {}
KNOWLEDGE = ("own", "colluders", "omniscient")
"""The threat models: an attacker knows its own update, its colluders', or every one."""
# What an attack of each kind supports unless it says otherwise: data and fault attacks
# run on clients, so not under the server-side omniscient hook.
_DEFAULT_KNOWLEDGE = {AttackKind.NONE: KNOWLEDGE, AttackKind.UPDATE: KNOWLEDGE,
                      AttackKind.DATA: ("own", "colluders"),
                      AttackKind.FAULT: ("own", "colluders")}


def register_attack(
    name: str,
    kind: AttackKind | str,
    fn: Callable[..., Any] | None,
    description: str,
    *,
    per_attacker: bool = False,
    params: tuple[Param, ...] = (),
    context: tuple[str, ...] = (),
    knowledge: tuple[str, ...] | None = None,
    scale: Callable[..., Any] | None = None,
) -> AttackSpec:
    """Register an attack under ``name`` and return its spec; refuse a taken name.

    Raises:
        DuplicateAttackError: ``name`` is already registered.
        AttackParameterError: ``name`` not kebab-case, ``kind`` unknown, ``fn`` given
            for kind ``none`` / missing for another kind, or ``params`` and ``context``
            not matching ``fn``'s keywords
            (:func:`strategies.params.check_declared_keywords`).

    """
    if name in _REGISTRY:
        raise DuplicateAttackError(
            f"attack {name!r} is already registered ({_REGISTRY[name].description}); "
            "pick another name."
        )
    if not _NAME_PATTERN.match(name):
        raise AttackParameterError(
            f"attack names are kebab-case (lowercase letters, digits, '-'); got {name!r}."
        )
    try:
        attack_kind = AttackKind(kind)
    except ValueError:
        valid = ", ".join(k.value for k in AttackKind)
        raise AttackParameterError(
            f"attack kind must be one of {valid}; got {kind!r} for {name!r}."
        ) from None
    if (fn is None) != (attack_kind is AttackKind.NONE):
        raise AttackParameterError(
            f"attack {name!r} of kind {attack_kind.value!r}: fn must be None exactly for "
            f"kind 'none'; got fn={fn!r}."
        )
    if fn is not None:
        try:
            check_declared_keywords(f"attack {name!r}", fn, params, context)
        except ValueError as exc:
            raise AttackParameterError(str(exc)) from None
    supported = _DEFAULT_KNOWLEDGE[attack_kind] if knowledge is None else tuple(knowledge)
    if not supported or set(supported) - set(KNOWLEDGE):
        raise AttackParameterError(f"attack {name!r}: knowledge must be some of "
                                   f"{list(KNOWLEDGE)}; got {knowledge!r}")
    spec = AttackSpec(name, attack_kind, fn, description, per_attacker, params, context,
                      supported, scale)
    _REGISTRY[name] = spec
    return spec


def attack_names(kind: AttackKind | str | None = None) -> tuple[str, ...]:
    """Return the registered names, sorted, optionally only those of one ``kind``."""
    wanted = None if kind is None else AttackKind(kind)
    return tuple(sorted(n for n, s in _REGISTRY.items() if wanted in (None, s.kind)))


def get_attack(name: str) -> AttackSpec:
    """Return the spec registered under ``name``.

    Raises:
        UnknownAttackError: ``name`` is not registered; the message lists every valid name.

    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownAttackError(name, attack_names()) from None


def craft_byzantine_updates(
    name: str,
    honest_updates: np.ndarray,
    num_attackers: int,
    rng: np.random.Generator,
    **params: Any,
) -> np.ndarray:
    """Craft the ``(num_attackers, d)`` updates of attack ``name`` (the one entry point).

    Used alike by a Byzantine client (its own update, or its colluders') and by the
    server-side omniscient hook (the round's honest updates); see the module docstring
    for the arguments. With ``num_attackers = 0`` the attack is not called and an empty
    ``(0, d)`` matrix is returned.

    Raises:
        UnknownAttackError: ``name`` is not registered.
        AttackKindError: the attack is not of a crafting kind (``none`` or ``data``).
        AttackParameterError: bad ``honest_updates``, ``num_attackers``, ``rng`` or a
            parameter the attack does not take (the message lists those it takes).
        InjectedFault: on purpose, for the ``"crash"`` fault.

    >>> import numpy as np
    >>> honest = np.array([[1.0, 2.0], [3.0, 6.0]])
    >>> craft_byzantine_updates("ipm", honest, 2, np.random.default_rng(0), epsilon=0.5)
    array([[-1., -2.],
           [-1., -2.]])

    """
    spec = crafting_spec(name)
    unknown = sorted(set(params) - set(spec.param_names))
    if unknown:
        raise AttackParameterError(
            f"attack {name!r} takes the parameters ({', '.join(spec.param_names)}); "
            f"got unknown {', '.join(unknown)}."
        )
    if not isinstance(rng, np.random.Generator):
        raise AttackParameterError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)); got {rng!r}."
        )
    updates = as_update_matrix(honest_updates)
    q = check_count("num_attackers", num_attackers, 0)
    if q == 0:  # no attacker: nothing to craft, and a "crash" has no one to crash
        return np.empty((0, updates.shape[1]), float_dtype(updates))
    crafted = spec.fn(updates, q, rng, **params)
    if spec.kind is AttackKind.UPDATE and crafted.shape != (q, updates.shape[1]):
        raise AttackKindError(
            f"attack {name!r} broke the crafting contract: returned shape {crafted.shape}, "
            f"expected (num_attackers, d) = {(q, updates.shape[1])}."
        )
    return crafted


def crafting_spec(name: str) -> AttackSpec:
    """Return the spec of ``name`` if it is of a crafting kind (``update`` or ``fault``).

    Raises:
        UnknownAttackError: ``name`` is not registered.
        AttackKindError: the attack is of kind ``none`` or ``data``; the message lists
            the crafting attacks.

    """
    spec = get_attack(name)
    if spec.kind not in CRAFTING_KINDS:
        crafting = (n for n in attack_names() if _REGISTRY[n].kind in CRAFTING_KINDS)
        raise AttackKindError(
            f"attack {name!r} is of kind {spec.kind.value!r} and crafts no updates; "
            f"crafting attacks are: {', '.join(crafting)}. A 'data' attack is applied to "
            "the training data; 'none' means train honestly."
        )
    return spec


# The registry: one call per attack.
register_attack("none", AttackKind.NONE, None, "no attack: Byzantine clients train honestly")
register_attack("ipm", AttackKind.UPDATE, ipm.craft_ipm, "-epsilon * honest mean (Xie et al. 2019)",
                params=ipm.PARAMS)
register_attack("alie", AttackKind.UPDATE, alie.craft_alie,
                "mean + z_max * std (Baruch et al. 2019)", context=("num_clients",))
register_attack(
    "sign-flip",
    AttackKind.UPDATE,
    sign_flip.craft_sign_flip,
    "each attacker sends -scale * its own update",
    per_attacker=True,
    params=sign_flip.PARAMS,
)
register_attack(
    "gaussian",
    AttackKind.UPDATE,
    gaussian.craft_gaussian,
    "N(0, sigma^2 I) noise per attacker (Blanchard et al. 2017)",
    per_attacker=True,
    params=gaussian.PARAMS,
)
register_attack(
    "label-flip", AttackKind.DATA, label_flip.poison_label_flip, "train on labels y -> C - 1 - y"
)
register_attack("nan", AttackKind.FAULT, faults.craft_nan, "fault: an update full of NaN")
register_attack("crash", AttackKind.FAULT, faults.craft_crash, "fault: the client raises")
register_attack(
    "wrong-shape",
    AttackKind.FAULT,
    faults.craft_wrong_shape,
    "fault: a flat update of length d + 1",
)
# The optimised and defence-aware attacks (issue: the attacks defences are judged by)
register_attack("min-max", AttackKind.UPDATE, min_max.craft_min_max,
                "mean + gamma p, max distance within the honest spread (Shejwalkar 2021)",
                params=min_max.PARAMS, knowledge=("colluders", "omniscient"))
register_attack("min-sum", AttackKind.UPDATE, min_sum.craft_min_sum,
                "mean + gamma p, summed distance within the honest (Shejwalkar 2021)",
                params=min_sum.PARAMS, knowledge=("colluders", "omniscient"))
register_attack("fang-krum", AttackKind.UPDATE, fang_krum.craft_fang_krum,
                "-lambda sign(mean), the largest lambda Krum selects (Fang et al. 2020)",
                context=("declared_f",), knowledge=("colluders", "omniscient"))
register_attack("fang-trimmed-mean", AttackKind.UPDATE, fang_trimmed_mean.craft_fang_trimmed_mean,
                "values beyond the honest range, against the mean's sign (Fang et al. 2020)",
                per_attacker=True, params=fang_trimmed_mean.PARAMS,
                knowledge=("colluders", "omniscient"))
register_attack("mimic", AttackKind.UPDATE, mimic.craft_mimic,
                "every attacker copies one honest update (Karimireddy et al. 2022)",
                params=mimic.PARAMS, knowledge=("colluders", "omniscient"))
register_attack("opt-ipm", AttackKind.UPDATE, opt_ipm.craft_opt_ipm,
                "IPM with the epsilon that hurts the defence most (Allouah et al. 2023)",
                params=opt_ipm.PARAMS, context=("defence",))
register_attack("opt-alie", AttackKind.UPDATE, opt_alie.craft_opt_alie,
                "ALIE with the z that hurts the defence most (Allouah et al. 2023)",
                params=opt_alie.PARAMS, context=("defence",), knowledge=("colluders", "omniscient"))
register_attack("backdoor", AttackKind.DATA, backdoor.poison_with_trigger,
                "a pixel trigger relabelled to a target, with model replacement (Bagdasaryan "
                "et al. 2020)", params=backdoor.PARAMS,
                context=("num_clients", "server_learning_rate", "attackers_per_round"),
                scale=backdoor.scale_update)
