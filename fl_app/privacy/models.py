"""Models Opacus can train: BatchNorm -> GroupNorm, validated."""

from __future__ import annotations

from torch import nn

from fl_app.errors import FLAppError


class IncompatibleModelError(FLAppError, ValueError):
    """A model Opacus cannot train with per-example gradients (e.g. BatchNorm left in)."""




def make_private_compatible(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` Opacus can train: ``ModuleValidator.fix`` then validate.

    ``fix`` replaces BatchNorm by GroupNorm (and LSTM/GRU/attention by Opacus'
    DP layers), which changes the ``state_dict``: build every copy of the model
    (server and clients) through this function. Raises
    :class:`IncompatibleModelError` if the fixed model still fails validation.
    """
    from opacus.validators import ModuleValidator  # Opacus loads only where DP is asked for
    from opacus.validators.errors import UnsupportedModuleError

    fixed = ModuleValidator.fix(model)
    fixed.train()
    try:
        ModuleValidator.validate(fixed, strict=True)
    except UnsupportedModuleError as error:
        raise IncompatibleModelError(
            f"the model cannot be trained with DP-SGD even after Opacus' fixes: {error}. "
            "Replace the listed layers (per-example gradients must not mix examples) or "
            "train without DP.") from None
    return fixed


def check_model(model: nn.Module) -> None:
    """Raise :class:`IncompatibleModelError` unless Opacus' ``ModuleValidator`` passes ``model``."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise IncompatibleModelError(
            f"the model is not ready for DP-SGD: {errors}. Build it with "
            "make_private_compatible(model) (BatchNorm -> GroupNorm).")
