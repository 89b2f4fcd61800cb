"""``fl-audit membership``: membership inference against a finished run's global model.

Members are ``m`` training examples drawn once from the training split (a fixed stream,
the same for every run, so that a target and its shadows agree on them); non-members
are ``m`` test examples, which no run trains on. Two attacks score every candidate
against the target's final model (:mod:`fl_app.audit.membership`):

* the loss attack (Yeom et al. 2018): minus the loss;
* offline LiRA (Carlini et al. 2022): ``k`` shadow federations, the target's run
  config with another seed and ``audit-exclude-members = m`` (every client drops the
  members from its data), so that every shadow is *out* for every candidate; the
  target's logit confidence is compared with the shadows' Gaussian.

``audit.json``: per attack ``auc``, ``tpr_at_1pct_fpr``, ``tpr_at_0.1pct_fpr``; the
ROC curves go to ``roc.png`` (log-log, as in the paper). The cost is ``k`` runs of
the target's configuration (printed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_curve

from fl_app.audit.members import MEMBER_STREAM, member_rows
from fl_app.audit.membership import lira_offline_scores, logit_confidence, loss_scores, roc_summary
from fl_app.audit.reconstruction_audit import load_final_model
from fl_app.learning.data import DataConfig, load_rows, load_test_set
from fl_app.learning.device import model_device
from fl_app.runs import layout

AUDIT_FILE = "audit.json"
FIGURE_FILE = "roc.png"
SHADOW_SEED_OFFSET = 1000  # shadow i runs with seed = target seed + 1000 + i


def candidates(data: DataConfig, num_members: int, exclude_test_rows: Sequence[int] = ()
               ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Members then non-members: images, true labels, and 1 for a member.

    Non-members are test rows other than ``exclude_test_rows`` (e.g. a run's canaries,
    which some client trained on under a wrong label).
    """
    x_in, y_in = load_rows(data, "train", member_rows(data, num_members))
    x_test, y_test = load_test_set(data)
    pool = np.setdiff1d(np.arange(len(y_test)), np.asarray(exclude_test_rows, dtype=np.int64))
    if num_members > len(pool):
        raise ValueError(f"at most {len(pool)} members: as many non-members come from the "
                         f"test split ({len(y_test)} images, {len(y_test) - len(pool)} of "
                         "them excluded)")
    out_rows = pool[np.random.default_rng([MEMBER_STREAM, num_members, 1]).choice(
        len(pool), size=num_members, replace=False)]
    x = torch.cat([x_in, x_test[out_rows]])
    y = torch.cat([y_in, y_test[out_rows]])
    return x, y, np.r_[np.ones(num_members, int), np.zeros(num_members, int)]


@torch.no_grad()
def phi_and_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
                 ) -> tuple[np.ndarray, np.ndarray]:
    """LiRA's logit confidence and the cross-entropy of every candidate."""
    model.eval()
    logits = model(x.to(model_device(model))).cpu()
    probabilities = torch.softmax(logits.double(), dim=1).numpy()
    loss = torch.nn.functional.cross_entropy(logits, y, reduction="none").numpy()
    return logit_confidence(probabilities, y.numpy()), loss.astype(np.float64)


def membership_audit(run_dir: str | Path, out: str | Path, *, num_members: int,
                     num_shadows: int, simulate_fn: Callable[..., Path] | None = None,
                     progress: Callable[[str], None] = print,
                     exclude_test_rows: Sequence[int] = ()) -> dict[str, Any]:
    """Train the shadows, score the candidates, write ``audit.json`` and ``roc.png``.

    ``exclude_test_rows``: test rows never used as non-members (see :func:`candidates`).
    """
    from fl_app.experiments.simulate import simulate

    run_dir, out = Path(run_dir).expanduser(), Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    summary = layout.read_summary(run_dir)
    cfg, target = load_final_model(run_dir)
    x, y, is_member = candidates(cfg.data, num_members, exclude_test_rows)
    phi, loss = phi_and_loss(target, x, y)
    started, shadow_phi = time.time(), []
    for i in range(num_shadows):
        progress(f"shadow federation {i + 1}/{num_shadows}")
        config = {**summary["config"], "seed": cfg.seed + SHADOW_SEED_OFFSET + i,
                  "audit-exclude-members": num_members, "resume": False,
                  "output-dir": str(out / "shadows"), "run-name": f"shadow-{i}"}
        shadow_dir = (simulate_fn or simulate)(config, num_supernodes=int(summary["num_nodes"]))
        shadow_phi.append(phi_and_loss(load_final_model(Path(shadow_dir))[1], x, y)[0])
    seconds = time.time() - started
    scores = {"loss": loss_scores(loss)}
    if num_shadows >= 2:
        scores["lira-offline"] = lira_offline_scores(phi, np.stack(shadow_phi))
    audit = {"audit": "membership", "run_dir": str(run_dir), "members": num_members,
             "non_members": num_members, "shadows": num_shadows,
             "shadow_seconds": round(seconds, 1),
             "attacks": {name: roc_summary(s, is_member) for name, s in scores.items()}}
    (out / AUDIT_FILE).write_text(json.dumps(audit, indent=2) + "\n")
    draw_roc(scores, is_member, out / FIGURE_FILE)
    return audit


def draw_roc(scores: dict[str, np.ndarray], is_member: np.ndarray, path: Path) -> None:
    """The ROC curve of each attack, log-log (Carlini et al.'s figure)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(is_member, s)
        ax.plot(np.maximum(fpr, 1e-4), np.maximum(tpr, 1e-4), label=name)
    ax.plot([1e-4, 1], [1e-4, 1], ls="--", c="grey", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
