"""What a server can rebuild from one client's update: gradient inversion.

Zhu, Liu and Han, "Deep Leakage from Gradients" (NeurIPS 2019) optimise dummy images
until their gradient matches the one the client sent; Geiping, Bauermeister, Droge and
Moeller, "Inverting Gradients -- How easy is it to break privacy in federated
learning?" (NeurIPS 2020) match the gradients' *direction* instead,

    x* = argmin_x  1 - <grad(x), g> / (||grad(x)|| ||g||)  +  tv_weight * TV(x),

(the cosine over all layers at once; TV the anisotropic total variation), with Adam on
``x``. Labels come from the last layer's bias gradient as in iDLG (Zhao et al. 2020):
for cross-entropy, ``dL/db_j = mean_i (p_ij - [y_i = j])`` is negative exactly at the
batch's labels (exact for one image; for a batch, the most negative entries).

One local step's update is ``-lr * g``; its direction is ``g``'s, so the cosine loss
needs neither the learning rate nor the batch size. A client that takes ``K`` local
steps sends ``w_0 - w_K = lr * sum_k g_k``, each ``g_k`` at that step's weights
(:func:`local_update`); the attacker then matches the direction of that sum, simulating
the ``K`` steps on its dummy images at the known learning rate (Geiping et al., Sec. 5,
on federated averaging). ``K = 1`` is the gradient itself. Quality is PSNR and SSIM
(scikit-image) of each reconstruction against its true image, reconstructions
paired to true images to maximise the total PSNR (the batch's order is unknown).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn
from torch.func import functional_call

from fl_app.learning.device import model_device


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  create_graph: bool = False) -> list[torch.Tensor]:
    """The gradient of the mean cross-entropy of ``(x, y)`` for every parameter."""
    loss = nn.functional.cross_entropy(model(x), y)
    return list(torch.autograd.grad(loss, list(model.parameters()), create_graph=create_graph))


def local_update(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int,
                 create_graph: bool = False) -> list[torch.Tensor]:
    """``(w_0 - w_K) / lr``: the sum of ``steps`` full-batch SGD gradients on ``(x, y)``.

    Each step's gradient is of the mean cross-entropy at that step's weights, ``w_{k+1}
    = w_k - lr g_k``, starting from ``model``'s weights, which are left unchanged (the
    steps run on copies through ``torch.func.functional_call``). ``steps = 1`` is
    :func:`loss_gradient`.
    """
    if steps == 1:
        return loss_gradient(model, x, y, create_graph=create_graph)
    weights = dict(model.named_parameters())
    names = list(weights)
    total: list[torch.Tensor] | None = None
    for _ in range(steps):
        loss = nn.functional.cross_entropy(functional_call(model, weights, (x,)), y)
        grads = torch.autograd.grad(loss, [weights[n] for n in names], create_graph=create_graph)
        weights = {n: weights[n] - lr * g for n, g in zip(names, grads, strict=True)}
        total = list(grads) if total is None else [t + g for t, g in zip(total, grads, strict=True)]
    assert total is not None
    return total


def labels_from_gradient(gradient: Sequence[torch.Tensor], batch_size: int) -> torch.Tensor:
    """The batch's labels from the last bias gradient: its ``batch_size`` most negative entries."""
    bias = gradient[-1].detach()
    if bias.ndim != 1:
        raise ValueError("the model's last parameter must be the output layer's bias")
    return torch.argsort(bias)[:batch_size]


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, across and down."""
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean()
            + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


def cosine_distance(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """``1 - cos`` of the two gradients seen as one vector each."""
    dot = sum((x * y).sum() for x, y in zip(a, b, strict=True))
    norm_a = torch.sqrt(sum((x * x).sum() for x in a))
    norm_b = torch.sqrt(sum((y * y).sum() for y in b))
    return 1 - dot / (norm_a * norm_b + 1e-12)


def invert_gradient(model: nn.Module, gradient: Sequence[torch.Tensor], labels: torch.Tensor,
                    image_shape: tuple[int, ...], value_range: tuple[float, float], *,
                    steps: int = 2000, lr: float = 0.1, tv_weight: float = 1e-4,
                    restarts: int = 1, seed: int = 0, local_steps: int = 1,
                    local_lr: float = 0.01) -> torch.Tensor:
    """Geiping et al.'s reconstruction of ``len(labels)`` images from ``gradient``.

    ``gradient`` is what the client sent divided by its learning rate: one step's
    gradient, or with ``local_steps`` K > 1 the sum of :func:`local_update`, which
    the attack then simulates at ``local_lr`` on its candidates. Returns the
    reconstruction of the lowest final loss over ``restarts``, clamped to
    ``value_range`` (the data's range, as the attacker knows the preprocessing).
    """
    target = [g.detach() for g in gradient]
    low, high = value_range
    generator = torch.Generator().manual_seed(seed)  # the CPU stream: alike on every device
    best, best_loss = None, float("inf")
    model.eval()
    for _ in range(restarts):
        x = (torch.rand((len(labels), *image_shape), generator=generator) * (high - low)
             + low).to(model_device(model)).requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=lr)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[int(steps * f) for f in (3 / 8, 5 / 8, 7 / 8)], gamma=0.1)
        for _ in range(steps):
            optimizer.zero_grad()
            loss = cosine_distance(local_update(model, x, labels, local_lr, local_steps,
                                                create_graph=True), target)
            (loss + tv_weight * total_variation(x)).backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                x.clamp_(low, high)
        final = float(cosine_distance(local_update(model, x, labels, local_lr, local_steps),
                                      target))
        if final < best_loss:
            best, best_loss = x.detach().clone(), final
    assert best is not None
    return best


def image_quality(truth: torch.Tensor, reconstructed: torch.Tensor,
                  value_range: tuple[float, float]) -> list[dict[str, float]]:
    """PSNR and SSIM of each true image against the reconstruction paired with it."""
    low, high = value_range
    scale = lambda t: ((t.detach().cpu().numpy() - low) / (high - low)).clip(0, 1)  # noqa: E731
    true, rec = scale(truth), scale(reconstructed)
    psnr = np.array([[peak_signal_noise_ratio(t, r, data_range=1.0) for r in rec] for t in true])
    rows, cols = linear_sum_assignment(-np.minimum(psnr, 100.0))  # identical images: inf
    quality = []
    for i, j in zip(rows, cols, strict=True):
        side = min(true[i].shape[-2:])
        window = min(7, side if side % 2 else side - 1)
        ssim = structural_similarity(true[i], rec[j], data_range=1.0, channel_axis=0,
                                     win_size=window)
        quality.append({"psnr": float(psnr[i, j]), "ssim": float(ssim)})
    return quality
