"""``fl-audit reconstruct``: what the server can rebuild from one client's update.

For each batch size ``b`` the client's first ``b`` training images give its update
after ``local_steps`` full-batch SGD steps at the run's learning rate (one step: the
gradient), sent in the clear (what a server sees without DP) and as DP-SGD would send
it (each step's per-example gradients clipped to ``C``, summed, ``N(0, sigma^2 C^2)``
added, divided by ``b``; the run's own ``C`` and ``sigma``, or 1.0 and 1.0). The
server inverts each (:func:`fl_app.audit.reconstruct.invert_gradient`) at the run's
final global model and the audit reports PSNR and SSIM against the true images, and
draws them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fl_app.audit.reconstruct import (
    image_quality,
    invert_gradient,
    labels_from_gradient,
    local_update,
)
from fl_app.config import parse_run_config
from fl_app.federation.roles import build_run_model
from fl_app.learning.data import load_partition
from fl_app.learning.device import model_device, resolve_device
from fl_app.privacy.engines import DEFAULT_GRAD_SAMPLE_MODE, GRAD_SAMPLE_MODES, StepContext
from fl_app.privacy.randomness import noise_generator_on
from fl_app.runs import layout
from fl_app.task import set_weights

AUDIT_FILE = "audit.json"
FIGURE_FILE = "reconstructions.png"


def run_config_of(summary: dict[str, Any]) -> Any:
    """The RunConfig a run's ``summary.json`` recorded (without ``resume``)."""
    return parse_run_config({k: v for k, v in summary["config"].items() if k != "resume"})


def load_final_model(run_dir: Path) -> tuple[Any, torch.nn.Module]:
    """The run's config and its final global model (``model.pt``), on the run's ``device``.

    The ``device`` key is resolved in this process: ``auto`` audits on a GPU if it has one.
    """
    cfg = run_config_of(layout.read_summary(run_dir))
    model = build_run_model(cfg).to(resolve_device(cfg.device))
    weights = torch.load(run_dir / layout.MODEL, weights_only=True)
    set_weights(model, [w.numpy() for w in weights])
    return cfg, model


def dp_sgd_update(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                  max_grad_norm: float, noise_multiplier: float, generator: torch.Generator,
                  grad_sample_mode: str = DEFAULT_GRAD_SAMPLE_MODE, lr: float = 0.0,
                  steps: int = 1) -> list[torch.Tensor]:
    """``(w_0 - w_K) / lr`` of ``steps`` full-batch DP-SGD steps on ``(x, y)``, as clients do.

    Each step is the clients' own engine (``dp-grad-sample-mode``): each example's
    gradient clipped to ``max_grad_norm``, summed, one draw of ``N(0, sigma^2 C^2)``
    added, divided by the batch size. The steps run on a copy of ``model`` with plain
    SGD at ``lr``, and the noisy gradients they leave are summed: one step gives the
    noisy gradient itself, whatever ``lr``.
    """
    trial = copy.deepcopy(model)
    params = [p for p in trial.parameters() if p.requires_grad]
    ctx = StepContext(model=trial, x=x, y=y, optimizer=torch.optim.SGD(params, lr=lr),
                      noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                      expected_batch_size=len(y), generator=generator,
                      noise_generator=noise_generator_on(model_device(trial), generator))
    total: list[torch.Tensor] | None = None
    with GRAD_SAMPLE_MODES[grad_sample_mode](ctx) as step:
        for _ in range(steps):
            step(torch.arange(len(y)))
            grads = [p.grad.detach().clone() for p in params]
            total = grads if total is None else [t + g for t, g in zip(total, grads, strict=True)]
    assert total is not None
    return total


def reconstruct_audit(run_dir: str | Path, out: str | Path, *, batch_sizes: Sequence[int],
                      partition: int = 0, steps: int = 1000, restarts: int = 4,
                      seed: int = 0, local_steps: int = 1, progress: Callable[[str], None] = print
                      ) -> dict[str, Any]:
    """Run the audit; write ``audit.json`` and the figure into ``out``; return the audit."""
    run_dir, out = Path(run_dir).expanduser(), Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    cfg, model = load_final_model(run_dir)
    x, y = load_partition(cfg.data, partition, int(layout.read_summary(run_dir).get(
        "num_nodes", 10)))
    x, y = x.to(model_device(model)), y.to(model_device(model))
    value_range = (float(x.min()), float(x.max()))
    clip = cfg.dp_max_grad_norm if cfg.dp else 1.0
    sigma = cfg.dp_noise_multiplier if cfg.dp else 1.0
    mode = cfg.dp_grad_sample_mode  # the engine the run's clients use (or would)
    lr = cfg.learning_rate
    generator = torch.Generator().manual_seed(seed)
    rows, shown = [], []
    for b in batch_sizes:
        xb, yb = x[:b], y[:b]
        for private in (False, True):
            gradient = (dp_sgd_update(model, xb, yb, clip, sigma, generator, mode, lr,
                                      local_steps) if private
                        else local_update(model, xb, yb, lr, local_steps))
            labels = labels_from_gradient(gradient, b)
            progress(f"batch {b}, {'DP-SGD' if private else 'no DP'}: inverting")
            rebuilt = invert_gradient(model, gradient, labels, tuple(x.shape[1:]), value_range,
                                      steps=steps, restarts=restarts, seed=seed,
                                      local_steps=local_steps, local_lr=lr)
            quality = image_quality(xb, rebuilt, value_range)
            rows.append({"batch_size": b, "dp": private,
                         "max_grad_norm": clip if private else None,
                         "noise_multiplier": sigma if private else None,
                         "psnr": [q["psnr"] for q in quality],
                         "ssim": [q["ssim"] for q in quality],
                         "psnr_mean": float(np.mean([q["psnr"] for q in quality])),
                         "ssim_mean": float(np.mean([q["ssim"] for q in quality]))})
            shown.append((b, private, xb.cpu(), rebuilt.cpu()))
    audit = {"audit": "reconstruct", "run_dir": str(run_dir), "partition": partition,
             "attack": "gradient inversion (Geiping et al. 2020: cosine + TV, Adam)",
             "steps": steps, "restarts": restarts, "local_steps": local_steps,
             "local_learning_rate": lr, "results": rows}
    (out / AUDIT_FILE).write_text(json.dumps(audit, indent=2) + "\n")
    draw_reconstructions(shown, value_range, out / FIGURE_FILE)
    return audit


def draw_reconstructions(shown: Sequence[tuple[int, bool, torch.Tensor, torch.Tensor]],
                         value_range: tuple[float, float], path: Path) -> None:
    """One row per (batch size, DP): the true images above, the reconstructions below."""
    from matplotlib.figure import Figure

    width = max(b for b, _, _, _ in shown)
    fig = Figure(figsize=(1.2 * width + 1.5, 2.4 * len(shown)), layout="constrained")
    grid = fig.subplots(2 * len(shown), width, squeeze=False)
    low, high = value_range
    for row, (b, private, truth, rebuilt) in enumerate(shown):
        for k in range(width):
            for half, images in ((0, truth), (1, rebuilt)):
                ax = grid[2 * row + half, k]
                ax.axis("off")
                if k < b:
                    image = ((images[k] - low) / (high - low)).clamp(0, 1).permute(1, 2, 0)
                    ax.imshow(image.squeeze(-1).numpy(), cmap="gray" if image.shape[-1] == 1
                              else None, vmin=0, vmax=1)
        grid[2 * row, 0].set_title(f"batch {b}, {'DP-SGD' if private else 'no DP'}: true",
                                   fontsize=8, loc="left")
        grid[2 * row + 1, 0].set_title("rebuilt by the server", fontsize=8, loc="left")
    fig.savefig(path, dpi=120)
