"""Exception types of the app, one per family, each saying why and how to fix."""

from __future__ import annotations

from typing import Any

from attacks.errors import AttackError
from strategies.errors import StrategyError


class FLAppError(Exception):
    """Base class of every error this app raises on purpose."""


class ConfigError(FLAppError, ValueError):
    """A run-config or node-config value that is not allowed.

    The message names the key, the value given and what is allowed, so the user
    can fix the override without reading code.
    """

    def __init__(self, key: str, value: Any, allowed: str, hint: str = "") -> None:
        self.key, self.value, self.allowed = key, value, allowed
        message = f"config key {key!r} = {value!r} is not allowed; expected {allowed}."
        if hint:
            message += f" {hint}"
        super().__init__(message)


class ConfigErrors(FLAppError, ValueError):  # noqa: N818 (a collection of ConfigError)
    """Several :class:`ConfigError` found together, reported in one go."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = list(errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"{len(self.errors)} invalid config value(s):\n{lines}")


class DataUnavailableError(FLAppError, RuntimeError):
    """The requested data cannot be loaded here (offline, missing folder, ...)."""


#: Every error this project raises on purpose, one root per package: ``except
#: PROJECT_ERRORS`` catches them all (not ``attacks.errors.InjectedFault``, the
#: deliberate failure of the ``crash`` fault-injection attack).
PROJECT_ERRORS: tuple[type[Exception], ...] = (FLAppError, StrategyError, AttackError)
