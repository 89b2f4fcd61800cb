"""Parameters that an aggregator or an attack declares next to its formula.

A method (an aggregation rule, an attack) lists its tunable parameters as a tuple of
:class:`Param` in its own module, and registers that tuple with it. Everything else
is derived from that one declaration:

- the run-config key ``<method>-<param>`` (``ipm-epsilon``, ``multikrum-m``), its type
  (that of the default) and its validation (:attr:`Param.rule`);
- the keyword the method's function takes (:attr:`Param.kwarg`, ``z-max`` -> ``z_max``),
  whose default must be the declared one (:func:`check_declared_keywords`);
- the README's table of method parameters and the reports' axis labels.

Attacks import this module too: an attack may be told the defence it faces, so
``attacks`` may depend on ``strategies``, never the reverse. Nothing here imports
Flower, torch or the app.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Value = bool | int | float | str
Rule = Callable[[Any], str | None]
"""A value check: ``None`` when the value is allowed, else what is expected instead."""

_KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Param:
    """One tunable parameter of a method.

    Attributes:
        name: kebab-case; the run-config key is ``<method>-<name>``.
        default: the value used when the key is not given; its type is the key's type.
        help: one line, for the README's table and error messages.
        rule: the check beyond the type (:data:`Rule`), or ``None``.
        label: a short axis label for figures (defaults to ``help``).

    """

    name: str
    default: Value
    help: str
    rule: Rule | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if not _KEBAB.match(self.name):
            raise ValueError(f"parameter names are kebab-case; got {self.name!r}")
        problem = self.rule(self.default) if self.rule else None
        if problem:
            raise ValueError(f"the default of {self.name!r}, {self.default!r}, breaks its own "
                             f"rule: expected {problem}")

    @property
    def kwarg(self) -> str:
        """The keyword the method's function takes (``z-max`` -> ``z_max``)."""
        return self.name.replace("-", "_")

    def key(self, method: str) -> str:
        """The run-config key of this parameter of ``method`` (``ipm`` -> ``ipm-epsilon``)."""
        return f"{method}-{self.name}"

    @property
    def axis_label(self) -> str:
        """The label of a figure axis that varies this parameter."""
        return self.label or self.help


def check_declared_keywords(owner: str, fn: Callable[..., Any], params: Iterable[Param],
                            context: Iterable[str] = ()) -> None:
    """Refuse a declaration that does not match ``fn``'s keyword-only parameters.

    Every keyword-only parameter of ``fn`` must be declared (a :class:`Param`), be
    a ``context`` value the framework passes (e.g. ALIE's ``num_clients``), or default
    to ``None`` (a value the method derives itself unless a caller of the pure
    function overrides it, like ALIE's ``z_max``; a run config has no ``None``). Every
    declared parameter must be a keyword of ``fn`` whose default is the declared one.
    A declaration is checked when it is registered, so a mismatch fails at import.

    Raises:
        ValueError: naming the method and each mismatch.

    """
    keywords = {p.name: p for p in inspect.signature(fn).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    declared = {p.kwarg: p for p in params}
    problems = [f"keyword {k!r} is neither declared nor context" for k, p in keywords.items()
                if k not in declared and k not in set(context) and p.default is not None]
    problems += [f"declared {p.name!r} is no keyword of {fn.__name__}"
                 for k, p in declared.items() if k not in keywords]
    problems += [f"{k!r} defaults to {keywords[k].default!r} in {fn.__name__} but is "
                 f"declared with {p.default!r}" for k, p in declared.items()
                 if k in keywords and keywords[k].default != p.default]
    if problems:
        raise ValueError(f"{owner}: " + "; ".join(problems))


# Rules shared by the methods' declarations and the run configuration's own keys.

def one_of(allowed: Iterable[str]) -> Rule:
    """Allow exactly the values in ``allowed``."""
    choices = tuple(allowed)
    return lambda v: None if v in choices else f"one of {list(choices)}"


def at_least(low: float) -> Rule:
    """Allow numbers ``>= low``."""
    return lambda v: None if v >= low else f"a number >= {low}"


def non_negative_finite(v: float) -> str | None:
    """Allow finite numbers ``>= 0``."""
    return None if v >= 0 and math.isfinite(v) else "a finite number >= 0"


def positive_finite(v: float) -> str | None:
    """Allow finite numbers ``> 0``."""
    return None if v > 0 and math.isfinite(v) else "a finite number > 0"
