"""Opacus' own per-sample-gradient modes: ``GradSampleModule`` with its ``DPOptimizer``."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from fl_app.privacy.engines import Session, StepContext, StepFn, register_grad_sample_mode

if TYPE_CHECKING:
    from opacus.optimizers import DPOptimizer


def _opacus_session(mode: str) -> Session:
    """Return a session running Opacus' ``GradSampleModule`` of ``mode`` and its DPOptimizer."""

    @contextmanager
    def session(ctx: StepContext) -> Iterator[StepFn]:
        # Opacus is imported once a session opens: the modes register with the config's
        # checks, which every process of a run imports, DP or not.
        from opacus.grad_sample import prepare_module
        from opacus.optimizers import get_optimizer_class
        from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

        extra = {"max_grad_norm": ctx.max_grad_norm} if mode == "ghost" else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = prepare_module(ctx.model, grad_sample_mode=mode, batch_first=True,
                                    loss_reduction="mean", **extra)
        try:
            module.forbid_grad_accumulation()  # as make_private does with Poisson sampling
            optimizer = get_optimizer_class(clipping="flat", distributed=False,
                                            grad_sample_mode=mode)(
                ctx.optimizer, noise_multiplier=ctx.noise_multiplier,
                max_grad_norm=ctx.max_grad_norm, expected_batch_size=ctx.expected_batch_size,
                loss_reduction="mean", generator=ctx.noise, secure_mode=ctx.secure_mode)
            criterion: Callable = nn.CrossEntropyLoss()
            if mode == "ghost":
                criterion = DPLossFastGradientClipping(module, optimizer, criterion, "mean")

            def step(idx: torch.Tensor) -> float | None:
                optimizer.zero_grad(set_to_none=True)
                if idx.numel() == 0:
                    _empty_batch(optimizer)
                    optimizer.step()
                    return None
                loss = criterion(module(ctx.x[idx]), ctx.y[idx])
                loss.backward()
                optimizer.step()
                return loss.item()

            yield step
        finally:
            module.cleanup()
            _strip_opacus_attributes(ctx.model)

    return session


def _empty_batch(optimizer: DPOptimizer) -> None:
    """Give ``optimizer`` the zero per-sample gradients of an empty Poisson batch.

    Opacus' ``DPOptimizer`` turns them into a noise-only step; the ``"functorch"``
    and ``"ew"`` modules fail on an empty forward pass, so none is run.
    """
    from opacus.optimizers import DPOptimizerFastGradientClipping

    for p in optimizer.params:
        if isinstance(optimizer, DPOptimizerFastGradientClipping):
            p.grad = torch.zeros_like(p)
        else:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)


def _strip_opacus_attributes(model: nn.Module) -> None:
    # GradSampleModule.cleanup() leaves these behind; the model must come out plain.
    for p in model.parameters():
        for name in ("summed_grad", "grad_sample", "_forward_counter", "_norm_sample"):
            if hasattr(p, name):
                delattr(p, name)
        p.grad = None
    for module in model.modules():
        for name in ("activations", "max_batch_len", "ft_compute_sample_grad"):
            if name in vars(module):
                delattr(module, name)



for _mode in ("hooks", "functorch", "ew", "ghost"):
    register_grad_sample_mode(_mode, _opacus_session(_mode))
