"""The attack of a run as one typed object: which attack, who attacks, what they know.

Built once by :class:`~fl_app.config.schema.RunConfig` (``cfg.attack_settings``) from
the run-config keys ``attack``, ``num-attackers``, ``attack-knowledge``,
``attack-start-round`` and the attack's declared parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from attacks.registry import KNOWLEDGE, AttackKind, get_attack

ATTACK_KNOWLEDGE = KNOWLEDGE
"""The threat models: an attacker knows its own update, its colluders', or every one."""


@dataclass(frozen=True)
class AttackSettings:
    """The attack of a run, as the Byzantine clients and the omniscient hook apply it."""

    name: str
    num_attackers: int
    knowledge: str  # ATTACK_KNOWLEDGE: what the attackers know of the honest updates
    start_round: int
    params: Mapping[str, Any]  # the attack's declared parameters, by keyword

    @property
    def kind(self) -> AttackKind:
        """How a client applies the attack."""
        return get_attack(self.name).kind

    @property
    def omniscient(self) -> bool:
        """True when the server-side omniscient adversary attacks (a simulation only)."""
        return self.name != "none" and self.knowledge == "omniscient"

    @property
    def client_side(self) -> bool:
        """True when Byzantine *clients* carry the attack (not the omniscient hook)."""
        return self.name != "none" and not self.omniscient

    def crafting_params(self, num_clients: int | None = None, **context: Any) -> dict[str, Any]:
        """The keywords of the attack's crafting function, with the round's context.

        ``num_clients`` (clients sampled per round) is passed to an attack that
        declares it as context (ALIE); the omniscient hook, which knows the round's
        updates exactly, passes ``None``. ``context`` holds what the defence-aware
        attacks may be told (``declared_f``, ``defence``); each attack gets only the
        keys it declares.
        """
        wanted = get_attack(self.name).context
        given = {**({"num_clients": num_clients} if num_clients is not None else {}), **context}
        return {**self.params, **{k: v for k, v in given.items() if k in wanted}}
