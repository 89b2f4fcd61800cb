"""The bookkeeping per-sample-gradient engine (the default).

Seconds per local epoch at the seed's setting (cifar-cnn, 500 CIFAR-10 train
images, batch 10, lr 0.01, momentum 0.5; ``benchmarks/bench_dp.py``, medians of
7 repeats; 2-core CPU shared with other jobs, load average ~8, hence the slow
2-thread wall times: OpenMP threads wait for busy cores. The ratios pair each
repeat with its own non-private epoch)::

    threads  mode         wall s/epoch x non-priv  CPU s/epoch x non-priv
          1  non-private         0.414      1.00x        0.199      1.00x
          1  bookkeeping         0.597      1.43x        0.263      1.42x
          1  ew                  0.984      2.39x        0.429      2.28x
          1  functorch           2.034      4.49x        0.890      4.38x
          1  ghost               1.309      3.17x        0.590      2.90x
          1  hooks               1.082      2.60x        0.506      2.41x
          2  non-private         5.737      1.00x        2.851      1.00x
          2  bookkeeping         8.081      1.23x        3.404      1.28x
          2  ew                 12.178      2.20x        6.646      2.22x
          2  functorch          20.545      3.77x       12.743      3.76x
          2  ghost              18.865      2.28x        8.297      2.28x
          2  hooks               8.020      1.92x        4.515      1.70x

``"bookkeeping"`` is the default: 1.4x the non-private epoch with one thread
(the app's setting) and 1.2-1.3x with two, where the fastest Opacus modes take
2.3-2.4x (ew, one thread) and 1.7-1.9x (hooks, two threads); the issue measured
2.9x hooks, 3.9x functorch, 2.1x ew and 2.9x ghost.
Its time goes to the per-sample conv gradients (im2col + batched matmul) and
the Gaussian draw, and it saves the parameter-gradient part of the conv backward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 (torch convention)
from torch import nn

from fl_app.privacy.engines import (
    KEY_GRAD_SAMPLE_MODE,
    StepContext,
    StepFn,
    register_grad_sample_mode,
)
from fl_app.privacy.models import IncompatibleModelError


@dataclass
class _Record:
    """One call of a hooked layer: its inputs (detached) and its output."""

    activations: list
    output: torch.Tensor
    version: int  # output._version when recorded: a later in-place change shows


class _Tape:
    """Forward hooks recording every call of each trainable layer (bookkeeping mode)."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = list(_trainable_layers(model))
        covered = {id(p) for layer in self.layers for p in _layer_params(layer)}
        missing = [name for name, p in model.named_parameters()
                   if p.requires_grad and id(p) not in covered]
        if missing or not covered:
            raise IncompatibleModelError(
                f"parameters {missing} belong to no layer the bookkeeping mode can hook (or "
                f"there is nothing to train); try {KEY_GRAD_SAMPLE_MODE}='hooks'")
        self.calls: dict[nn.Module, list[_Record]] = {}
        self.handles = [layer.register_forward_hook(self._record) for layer in self.layers]

    def _record(self, module: nn.Module, inputs: tuple, output: object) -> None:
        if not torch.is_grad_enabled():
            return
        if not isinstance(output, torch.Tensor):
            raise IncompatibleModelError(
                f"{type(module).__name__} returns {type(output).__name__}, not a tensor; use "
                f"{KEY_GRAD_SAMPLE_MODE}='hooks'")
        activations = [t.detach() if isinstance(t, torch.Tensor) else t for t in inputs]
        self.calls.setdefault(module, []).append(_Record(activations, output, output._version))

    def backprops(self, loss: torch.Tensor) -> list[tuple[nn.Module, list[tuple[_Record,
                                                                                torch.Tensor]]]]:
        """Return each called layer's records with ``d loss / d output`` of each call.

        Only the gradients flowing to the layer outputs are computed, not those
        of the parameters, which DP-SGD would discard.
        """
        records = [(layer, record) for layer in self.layers for record in self.calls.get(layer, [])]
        for layer, record in records:
            if record.output._version != record.version:
                raise IncompatibleModelError(
                    f"the output of {type(layer).__name__} is modified in place (e.g. by "
                    "ReLU(inplace=True)); use out-of-place operations")
        grads = torch.autograd.grad(loss, [r.output for _, r in records], allow_unused=True)
        by_layer: dict[nn.Module, list[tuple[_Record, torch.Tensor]]] = {}
        for (layer, record), grad in zip(records, grads, strict=True):
            if grad is not None:  # None: this output does not reach the loss
                by_layer.setdefault(layer, []).append((record, grad))
        self.calls.clear()
        return list(by_layer.items())

    def remove(self) -> None:
        """Remove the hooks and what the functorch fallback attached to layers."""
        for handle in self.handles:
            handle.remove()
        self.calls.clear()
        for layer in self.layers:
            if "ft_compute_sample_grad" in vars(layer):
                del layer.ft_compute_sample_grad


def _grad_samplers() -> dict[type, Callable]:
    """Opacus' grad sampler of each layer type it has one for.

    Opacus is imported here, not with this module: the engines register with the
    config's checks, which every process of a run imports, DP or not.
    """
    from opacus.grad_sample import GradSampleModule

    return GradSampleModule.GRAD_SAMPLERS


def _layer_params(layer: nn.Module) -> list[nn.Parameter]:
    # A layer Opacus has a grad sampler for owns its direct parameters; any other
    # layer is handled whole by functorch, children included (as GradSampleModule).
    recurse = type(layer) not in _grad_samplers()
    return [p for p in layer.parameters(recurse=recurse) if p.requires_grad]


def _trainable_layers(module: nn.Module) -> Iterator[nn.Module]:
    """Yield the layers to hook, as ``GradSampleModule.iterate_submodules`` does."""
    if any(p.requires_grad for p in module.parameters(recurse=False)):
        yield module
        if type(module) not in _grad_samplers():
            return
    for child in module.children():
        yield from _trainable_layers(child)


def _conv2d_grad_sample(layer: nn.Conv2d, activations: list[torch.Tensor],
                        backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Opacus' Conv2d grad sampler without its grouped-einsum reshuffles (groups == 1).

    ``grad W_i = B_i U_i^T`` with ``U_i`` the unfolded (im2col) input of example ``i``
    and ``B_i`` its output gradient; 30-40 % faster than Opacus' at batch 10.
    """
    from opacus.utils.tensor_utils import unfold2d

    n = backprops.shape[0]
    unfolded = unfold2d(activations[0], kernel_size=layer.kernel_size, padding=layer.padding,
                        stride=layer.stride, dilation=layer.dilation)
    backprops = backprops.reshape(n, layer.out_channels, -1)
    grads = {}
    if layer.weight.requires_grad:
        grads[layer.weight] = torch.bmm(backprops, unfolded.transpose(1, 2))
    if layer.bias is not None and layer.bias.requires_grad:
        grads[layer.bias] = backprops.sum(2)
    return grads


def _grad_sampler(layer: nn.Module) -> Callable:
    from opacus.grad_sample.functorch import ft_compute_per_sample_gradient

    if (type(layer) is nn.Conv2d and layer.groups == 1 and layer.padding_mode == "zeros"
            and not isinstance(layer.padding, str)):
        return _conv2d_grad_sample
    return _grad_samplers().get(type(layer), ft_compute_per_sample_gradient)


def _clip_and_add(calls: list[tuple[nn.Module, list[tuple[_Record, torch.Tensor]]]],
                  grads: dict[nn.Parameter, torch.Tensor], n: int, max_grad_norm: float) -> None:
    """Add ``sum_i min(1, C / (||g_i|| + 1e-6)) g_i`` to the gradient buffers ``grads``.

    ``||g_i||^2`` sums over layers: for a linear layer called once on ``(n, in)``
    inputs, ``||b_i||^2 (||a_i||^2 + 1)`` without forming ``b_i a_i^T`` (ghost
    norm); for any other layer, from its per-sample gradients (summed over calls).
    """
    first = next(iter(grads.values()))
    squared = torch.zeros(n, dtype=first.dtype, device=first.device)
    clipped_sums: list[Callable[[torch.Tensor], None]] = []
    for layer, records in calls:
        inputs = records[0][0].activations[0]
        if type(layer) is nn.Linear and len(records) == 1 and inputs.dim() == 2:
            b = records[0][1]
            b_squared = b.square().sum(1)
            if layer.weight.requires_grad:
                squared.addcmul_(inputs.square().sum(1), b_squared)
                clipped_sums.append(lambda c, w=grads[layer.weight], a=inputs, b=b:
                                    w.addmm_((b * c[:, None]).t(), a))
            if layer.bias is not None and layer.bias.requires_grad:
                squared.add_(b_squared)
                clipped_sums.append(lambda c, v=grads[layer.bias], b=b: v.addmv_(b.t(), c))
            continue
        sampler, per_sample = _grad_sampler(layer), {}
        for record, backprop in records:
            for param, grad in sampler(layer, record.activations, backprop).items():
                if param.requires_grad:
                    per_sample[param] = per_sample[param] + grad if param in per_sample else grad
        for param, grad in per_sample.items():
            if grad.shape[0] != n:
                raise IncompatibleModelError(
                    f"{type(layer).__name__} gave {grad.shape[0]} per-sample gradients for a "
                    f"batch of {n}; use {KEY_GRAD_SAMPLE_MODE}='hooks'")
            matrix = grad.reshape(n, -1)
            squared.add_(matrix.square().sum(1))
            clipped_sums.append(lambda c, v=grads[param], g=matrix: v.view(-1).addmv_(g.t(), c))
    clip = (max_grad_norm / (squared.sqrt_() + 1e-6)).clamp_(max=1.0)  # Opacus' factor
    for add in clipped_sums:
        add(clip)


@contextmanager
def _bookkeeping_session(ctx: StepContext) -> Iterator[StepFn]:
    from opacus.optimizers.optimizer import _generate_noise

    model, generator = ctx.model, ctx.noise
    tape = _Tape(model)
    params = [p for p in model.parameters() if p.requires_grad]
    # All gradients live in one buffer: one Gaussian draw and one division per step.
    flat = torch.empty(sum(p.numel() for p in params), dtype=params[0].dtype,
                       device=params[0].device)
    grads, offset = {}, 0
    for p in params:
        grads[p] = flat[offset:offset + p.numel()].view(p.shape)
        offset += p.numel()
    noise_std = ctx.noise_multiplier * ctx.max_grad_norm

    def step(idx: torch.Tensor) -> float | None:
        with torch.no_grad():
            if ctx.secure_mode:  # Opacus' own draw: four Gaussians summed, halved
                flat.copy_(_generate_noise(noise_std, flat, generator, secure_mode=True))
            else:
                flat.normal_(0.0, noise_std, generator=generator)
        n, loss_value = idx.numel(), None
        if n:  # an empty batch adds nothing but the noise
            loss = F.cross_entropy(model(ctx.x[idx]), ctx.y[idx], reduction="sum")
            calls = tape.backprops(loss)
            loss_value = loss.item() / n
            with torch.no_grad():
                _clip_and_add(calls, grads, n, ctx.max_grad_norm)
        with torch.no_grad():
            flat.div_(ctx.expected_batch_size)
        ctx.optimizer.step()
        return loss_value

    for p in params:
        p.grad = grads[p]
    try:
        yield step
    finally:
        tape.remove()
        for p in params:
            p.grad = None



register_grad_sample_mode("bookkeeping", _bookkeeping_session)
