"""One error root per package, all reachable from one ``except PROJECT_ERRORS``."""

import importlib
import inspect
import pkgutil

import pytest

import attacks
import fl_app
import strategies
from attacks.errors import AttackError, InjectedFault
from fl_app.errors import PROJECT_ERRORS, FLAppError
from strategies.errors import StrategyError

ROOTS = {"fl_app": FLAppError, "strategies": StrategyError, "attacks": AttackError}


def project_exceptions():
    """Every exception class defined in the three packages' modules."""
    found = {}
    for package in (fl_app, strategies, attacks):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(info.name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == info.name:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


EXCEPTIONS = project_exceptions()


def test_the_packages_define_errors():
    assert len(EXCEPTIONS) >= 15


@pytest.mark.parametrize("name", sorted(EXCEPTIONS))
def test_every_error_derives_from_its_packages_root(name):
    error = EXCEPTIONS[name]
    if error is InjectedFault:  # the crash attack's deliberate failure, not a misuse
        assert not issubclass(error, PROJECT_ERRORS)
        return
    assert issubclass(error, ROOTS[name.split(".")[0]]), f"{name} has the wrong root"
    assert issubclass(error, PROJECT_ERRORS)
